"""Registrations in Redis, bounds and all, in one script (:mod:`securechat.server.registration`).

Keys beside those of :mod:`securechat.server.redis_lua` (``P`` is the prefix):

========================  ======  ==============================================================
``P rb:<bucket>``         hash    ``t`` tokens, ``s`` when last spent: a registration bucket
                                  (``a:<address>``, ``k:<fingerprint>``, ``all``); it expires
                                  once it would be full again
========================  ======  ==============================================================

The script touches the name's ``reg`` key, ``P names`` and the buckets: the
one script that is not per user, since its bounds are not (in Redis Cluster
it would need the buckets and the count under one hash tag, see
docs/deployment.md).
"""

from __future__ import annotations

from typing import Final

from .rediscommands import Script

# KEYS reg names bucket...; ARGV name pem fingerprint now max_users burst... (one per bucket; none: no bound).
# Returns {1 new or 0 known, pem, fingerprint, created}, or {-1, i}: refused by bucket i, 0 for max_users.
REGISTER_NEW: Final = Script("register_new", """
local got = redis.call('HMGET', KEYS[1], 'pem', 'fp', 'created')
if got[1] then
  redis.call('ZADD', KEYS[2], 0, ARGV[1])
  return {0, got[1], got[2], got[3]}
end
local now = tonumber(ARGV[4])
if #KEYS > 2 and redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[5]) then return {-1, 0} end
local left = {}
for i = 3, #KEYS do
  local burst = tonumber(ARGV[i + 3])
  local b = redis.call('HMGET', KEYS[i], 't', 's')
  local tokens = burst
  if b[1] then tokens = math.min(burst, tonumber(b[1]) + math.max(0, now - tonumber(b[2])) * burst / 3600) end
  if tokens < 1 then return {-1, i - 2} end
  left[i] = tokens - 1
end
for i = 3, #KEYS do
  redis.call('HSET', KEYS[i], 't', tostring(left[i]), 's', ARGV[4])
  redis.call('EXPIRE', KEYS[i], 3601)
end
redis.call('HSET', KEYS[1], 'pem', ARGV[2], 'fp', ARGV[3], 'created', ARGV[4])
redis.call('ZADD', KEYS[2], 0, ARGV[1])
return {1, ARGV[2], ARGV[3], ARGV[4]}
""")
