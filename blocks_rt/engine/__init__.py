"""The engine layer: everything of blocks-rt that reaches under python-socketio, python-engineio and aiohttp.

Nothing outside this subpackage touches a private name of those libraries; they are pinned exactly in
pyproject.toml, and `tests/test_upstream_surface.py` lists every private name used here (with why, its
signature, and a hash of the upstream source where code was copied or replaced wholesale), so an upgrade
fails with one list. Public seams are used where they exist: the client manager is passed to
`socketio.AsyncServer(client_manager=...)`, an aiohttp websocket's transport and back-pressure are read from
the request's protocol (`transport`, `writing_paused`), a handshake is checked with
`WebSocketResponse.can_prepare`, rooms are read with `bidict.items()`, queued packets go through
`LeanSocket.push`. It imports nothing of the app: what it needs of it (the answer to an unknown client event,
who the admin is and what it sees of a socket) is handed in. What each module replaces upstream, and why:

- `server.py`: the Engine.IO and Socket.IO servers, narrowed (JSON only, packet and handshake guards,
  prompt answers to oversized long-polling requests) and made to answer as Node's engine.io does where
  python-engineio departs from the Engine.IO v4 protocol (unknown transport or method: 400; a second
  websocket for an upgraded session: accepted and closed); each connection's environ shares its header
  keys with the others (interned) and leaves out the WSGI fields nothing reads. Private: the Socket.IO
  server's packet handlers (`_handle_eio_message` and the `_handle_*` it calls, `_trigger_event`,
  `_send_packet`), its `_engineio_server_class` hook, and the engine's driver table `_async` (the only way
  to choose the websocket class and the environ builder).
- `sockets.py`: Engine.IO sockets that own no task while idle and write to an idle websocket directly;
  exact heartbeats (a deadline per outstanding ping), exact `pingInterval` in the handshake, closed
  sessions gone at once, and a bound on each socket's unsent bytes (slow consumers are told and closed).
  Private: `AsyncSocket._websocket_handler` (replaced), `AsyncSocket._upgrade_websocket` (extended: the
  takeover below), the class swap in `adopt()` (python-engineio creates its sockets itself and has no
  factory), and the aiohttp wrapper's `_sock`.
- `websocket.py`: a websocket opened directly and uncompressed is taken over from aiohttp at the handshake
  (our 101, our RFC 6455 framing on the TCP transport), so that no aiohttp request, handler task or
  coroutine chain stays alive per idle connection (19.5 → 5.2 KiB of Python heap per connection).
  Private: aiohttp's request handler's `_message_tail`, and the behaviour of its `start`,
  `finish_response` and `connection_lost` that lets a handler forget its connection and return without
  anything written or closed.
- `wire.py`: the frames both websockets write (sockets.py and websocket.py talk through the protocols each
  declares, not each other's modules), and the cap on a websocket's kernel send buffer (no upstream names).
- `manager.py`: the client manager's fan-out: one encoded frame per event, one write per socket per batch.
  Public names of python-socketio's manager, over its internal room structure.
- `deadlines.py`: one event-loop timer for every connection's handshake timeout, pings, pong deadlines and
  token expiry (no upstream names).
- `admin.py`: the Socket.IO Admin UI (python-socketio's `InstrumentedAsyncServer`, subclassed) fitted to
  this engine: it reports what the fast manager delivers, undoes upstream's process-wide patches of
  python-engineio's socket class, and never shows a user's token; the app configures it (`AdminConfig`) and
  hands it the login throttle and what to show of a socket. Private: the originals upstream keeps
  under mangled names, `AsyncServer._handle_event`, the manager's `_timestamps`.
"""
