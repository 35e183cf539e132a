"""The engine layer: everything of blocks-rt that reaches under python-socketio, python-engineio and aiohttp.

Nothing outside this subpackage touches a private name of those libraries. What each module replaces
upstream, and why:

- `server.py`: the Engine.IO and Socket.IO servers, narrowed (JSON only, packet and handshake guards,
  prompt answers to oversized long-polling requests).
- `sockets.py`: Engine.IO sockets that own no task while idle and write to an idle websocket directly.
- `manager.py`: the client manager's fan-out: one encoded frame per event, one write per socket per batch.
- `deadlines.py`: one event-loop timer for every connection's handshake timeout, pings and token expiry.
"""
