"""Every Lua script the gateway runs in Redis, with what it is given (KEYS, ARGV) and what it returns.

A script runs atomically on the shard owning its keys (all of one script's keys share a hash tag, so a slot).
"""

from __future__ import annotations

import hashlib

# --- the history's append (history.py) ------------------------------------------------------------------
# KEYS: epoch, log, channel. ARGV: stream, candidate epoch, max events, min id, logged at, publish command
# ('' = do not publish), then (event, payload) pairs. Returns the epoch then each entry id. The message is
# `stream\nepoch\nloggedAt` and `\nid\nevent\npayload` per event (no field holds a newline: ids, names and
# compact JSON never do), so a node decodes a stream's batch without parsing an envelope.
APPEND_SCRIPT = """
local epoch = redis.call('GET', KEYS[1])
if not epoch then
  epoch = ARGV[2]
  redis.call('SET', KEYS[1], epoch)
end
local out = {epoch}
local message = {ARGV[1], epoch, ARGV[5]}
for i = 7, #ARGV, 2 do
  local id = redis.call('XADD', KEYS[2], 'MAXLEN', ARGV[3], '*', 'e', ARGV[i], 'p', ARGV[i + 1], 't', ARGV[5])
  out[#out + 1] = id
  message[#message + 1] = id
  message[#message + 1] = ARGV[i]
  message[#message + 1] = ARGV[i + 1]
end
redis.call('XTRIM', KEYS[2], 'MINID', ARGV[4])
if ARGV[6] ~= '' then
  redis.call(ARGV[6], KEYS[3], table.concat(message, '\\n'))
end
return out
"""
APPEND_SHA = hashlib.sha1(APPEND_SCRIPT.encode()).hexdigest()


# --- idempotency records (idempotency.py): one script per step, on the record's one key --------------------
_NOW = "local t = redis.call('TIME') local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)"

CLAIM = _NOW + """
local r = redis.call('HMGET', KEYS[1], 'fp', 'lease', 'answer', 'logged')
if not r[1] then
  redis.call('HSET', KEYS[1], 'fp', ARGV[1], 'token', ARGV[2], 'lease', now + tonumber(ARGV[3]), 'since', now)
  redis.call('PEXPIRE', KEYS[1], ARGV[4])
  return {'claimed'}
end
if r[1] ~= ARGV[1] then return {'reused'} end
if r[3] then return {'answered', r[3]} end
if tonumber(r[2]) > now then return {'in_flight'} end
redis.call('HSET', KEYS[1], 'token', ARGV[2], 'lease', now + tonumber(ARGV[3]))
if r[4] then return {'claimed', r[4]} end
return {'claimed', '', redis.call('HGET', KEYS[1], 'since')}
"""

# ARGV[1] is the attempt's token: an attempt whose lease was taken over writes nothing.
LOGGED = """
if redis.call('HGET', KEYS[1], 'token') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'logged', ARGV[2])
return 1
"""

ANSWER = """
if redis.call('HGET', KEYS[1], 'token') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'answer', ARGV[2])
redis.call('HDEL', KEYS[1], 'logged', 'token', 'lease')
return 1
"""

# ARGV[2] is '1' when the attempt failed inside its log append: keep the record, a retry looks in the log.
RELEASE = """
if redis.call('HGET', KEYS[1], 'token') ~= ARGV[1] then return 0 end
if redis.call('HEXISTS', KEYS[1], 'logged') == 1 or ARGV[2] == '1' then
  redis.call('HSET', KEYS[1], 'lease', 0)
else
  redis.call('DEL', KEYS[1])
end
return 1
"""
