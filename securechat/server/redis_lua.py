"""The Lua scripts of the Redis store: each one is atomic, so two nodes always agree.

Every script touches the keys of one user only (``{name}`` hash tag: one Redis
Cluster slot); what it publishes goes to user channels named the same way.
Key layout (``P`` is the prefix, ``sc:`` unless a test picks another):

========================  ======  ==============================================================
``P reg:{name}``          hash    ``pem``, ``fp``, ``created``: the registration (first come;
                                  the script is redis_names.py's, with the registration bounds)
``P names``               zset    every registered name, score 0 (sorted by name)
``P q:{name}``            stream  the queue: entry id ``0-<seq>``; fields ``s`` sender, ``i`` id,
                                  ``t`` server_ts, ``e`` enqueued_at, ``r`` the send's rid (JSON,
                                  empty if none), ``q`` 1 if the sender was told ``queued``,
                                  ``f`` the ``message`` frame
``P qi:{name}``           hash    ``"<sender> <id>"`` -> ``"<seq> <size>"``: dedupe and delete by id
``P qm:{name}``           hash    ``n`` the last seq (never reset), ``b`` bytes queued
``P qs:{name}``            hash    ``c:<sender>``, ``b:<sender>``: each sender's messages and bytes queued
                                  (its share of the queue, issue 13 item 8)
``P qf:{name}``            hash    ``"<sender> <id>"`` -> failed hand-outs of that queued message
``P aside:{sender}``       hash    ``"<recipient> <id>"`` -> ``"<enqueued_at> <rid>"``: the sender's messages
                                  set aside, until it is told (its TTL is the queue's)
``P stored``              string  bytes queued for everyone (``--max-store-bytes``); the one key
                                  outside a user's slot (Redis Cluster would need it per shard)
``P seen:{name}``         zset    ``"<sender> <id>"`` confirmed, scored by time: a resend within the
                                  dedupe window is not stored again
``P sess:{name}``         string  the session counter: each login's number
``P u:{name}``            pubsub  the user's channel: ``M`` new messages, ``G`` look again,
                                  ``A`` acks for this sender (formats: pokes.py), ``R`` a newer session, ``U`` some of
                                  this sender's messages were set aside (issue 13 item 1)
``P presence``            pubsub  ``<name> <0|1> <session number> <node>``
``P server_id``           string  the server id every node presents
========================  ======  ==============================================================
"""

from __future__ import annotations

from typing import Final

from .rediscommands import Script

# KEYS q qi qm seen qs stored; ARGV limit bytes_limit channel now dedupe_ttl sender_limit sender_bytes store_bytes,
# then per message (ENQUEUE_HEAD values before, ENQUEUE_ITEM after): sender id server_ts enqueued_at frame rid.
# limit 0: no caps (a requeue). channel '': publish nothing. The messages are one recipient's, taken in order
# exactly as if each were a call of its own (a node joins the sends of one loop turn: rediscommands.py's Batch),
# except that what is published goes in one `M` for all those stored (then a `G` if any was queued already).
# Returns {status, seq, receivers} per message: 1 stored, 0 already queued, 2 confirmed within the dedupe
# window, or {-1, cap, 0}: over the store's bytes (1), the recipient's queue (2) or the sender's share (3).
ENQUEUE_HEAD: Final = 8
ENQUEUE_ITEM: Final = 6
ENQUEUE: Final = Script("enqueue", """
local limit, channel = tonumber(ARGV[1]), ARGV[3]
local function one(sender, id, ts, at, frame, rid)
  local field = sender .. ' ' .. id
  if redis.call('HEXISTS', KEYS[2], field) == 1 then return 0, 0, 0 end
  local seen = redis.call('ZSCORE', KEYS[4], field)
  if seen and tonumber(seen) >= tonumber(ARGV[4]) - tonumber(ARGV[5]) then
    return 2, 0, 0
  end
  local size = string.len(frame)
  local cfield, bfield = 'c:' .. sender, 'b:' .. sender
  if limit > 0 then
    if tonumber(redis.call('GET', KEYS[6]) or '0') + size > tonumber(ARGV[8]) then return -1, 1, 0 end
    local count = redis.call('HLEN', KEYS[2])
    local bytes = tonumber(redis.call('HGET', KEYS[3], 'b') or '0')
    if count + 1 > limit or bytes + size > tonumber(ARGV[2]) then return -1, 2, 0 end
    local mine = tonumber(redis.call('HGET', KEYS[5], cfield) or '0')
    if mine > 0 and (mine + 1 > tonumber(ARGV[6])
        or tonumber(redis.call('HGET', KEYS[5], bfield) or '0') + size > tonumber(ARGV[7])) then
      return -1, 3, 0
    end
  end
  local seq = redis.call('HINCRBY', KEYS[3], 'n', 1)
  redis.call('HINCRBY', KEYS[3], 'b', size)
  redis.call('HINCRBY', KEYS[5], cfield, 1)
  redis.call('HINCRBY', KEYS[5], bfield, size)
  redis.call('INCRBY', KEYS[6], size)
  redis.call('HSET', KEYS[2], field, seq .. ' ' .. size)
  return 1, seq, 0
end
local out, stored, again = {}, {}, false
for i = 9, #ARGV, 6 do
  local status, seq = one(ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4], ARGV[i + 5])
  out[#out + 1] = status
  out[#out + 1] = seq
  out[#out + 1] = 0
  if status == 1 then stored[#stored + 1] = i elseif status == 0 then again = true end
end
local receivers = 0
if channel ~= '' and #stored > 0 then
  -- 'M<n>', a line per message (seq sender id server_ts size rid: the rid, JSON, last), then the frames.
  local lines, frames = {'M' .. #stored}, {}
  for k, i in ipairs(stored) do
    lines[k + 1] = out[(i - 9) / 2 + 2] .. ' ' .. ARGV[i] .. ' ' .. ARGV[i + 1] .. ' ' .. ARGV[i + 2] .. ' '
      .. string.len(ARGV[i + 4]) .. ' ' .. ARGV[i + 5]
    frames[k] = ARGV[i + 4]
  end
  receivers = redis.call('PUBLISH', channel, table.concat(lines, '\\n') .. '\\n' .. table.concat(frames))
end
if channel ~= '' and again then receivers = redis.call('PUBLISH', channel, 'G') end
local told = '0'
if receivers == 0 then told = '1' end
for _, i in ipairs(stored) do
  redis.call('XADD', KEYS[1], '0-' .. out[(i - 9) / 2 + 2], 's', ARGV[i], 'i', ARGV[i + 1], 't', ARGV[i + 2],
    'e', ARGV[i + 3], 'r', ARGV[i + 5], 'q', told, 'f', ARGV[i + 4])
end
for k = 3, #out, 3 do
  if out[k - 2] == 0 or out[k - 2] == 1 then out[k] = receivers end
end
return out
""")

# A message leaves the queue: its sender's share and the store's total go down (issue 13, item 8).
UNCOUNT: Final = """
local function uncount(shares, stored, sender, size)
  if redis.call('HINCRBY', shares, 'c:' .. sender, -1) <= 0 then
    redis.call('HDEL', shares, 'c:' .. sender, 'b:' .. sender)
  else
    redis.call('HINCRBY', shares, 'b:' .. sender, -size)
  end
  redis.call('DECRBY', stored, size)
end
"""

# KEYS q qi qm seen qs stored; ARGV now dedupe_ttl recipient ack_channel_head, then per message: sender id ack rid.
# Deletes each message still queued, remembers it as confirmed, and (ack = '1') publishes `delivered`
# on the sender's channel (ack_channel_head .. sender .. '}'). Returns how many were deleted.
CONFIRM: Final = Script("confirm", UNCOUNT + """
local now = tonumber(ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', '(' .. (now - tonumber(ARGV[2])))
local deleted, acks, senders = 0, {}, {}  -- one `A` per sender, its acks in order
for i = 5, #ARGV, 4 do
  local field = ARGV[i] .. ' ' .. ARGV[i + 1]
  local entry = redis.call('HGET', KEYS[2], field)
  if entry then
    local space = string.find(entry, ' ', 1, true)
    local size = tonumber(string.sub(entry, space + 1))
    redis.call('XDEL', KEYS[1], '0-' .. string.sub(entry, 1, space - 1))
    redis.call('HDEL', KEYS[2], field)
    redis.call('HDEL', KEYS[7], field)
    redis.call('HINCRBY', KEYS[3], 'b', -size)
    uncount(KEYS[5], KEYS[6], ARGV[i], size)
    redis.call('ZADD', KEYS[4], now, field)
    deleted = deleted + 1
    if ARGV[i + 2] == '1' then
      local sender = ARGV[i]
      if not acks[sender] then acks[sender] = {'A'}; senders[#senders + 1] = sender end
      local lines = acks[sender]
      lines[#lines + 1] = 'delivered\\n' .. ARGV[i + 1] .. '\\n' .. ARGV[3] .. '\\n' .. ARGV[i + 3]
    end
  end
end
for _, sender in ipairs(senders) do
  redis.call('PUBLISH', ARGV[4] .. sender .. '}', table.concat(acks[sender], '\\n'))
end
if deleted > 0 and redis.call('HLEN', KEYS[2]) == 0 then redis.call('DEL', KEYS[1]) end
return deleted
""")

# KEYS q qi qm qs stored qf; ARGV horizon. Deletes the messages enqueued before the horizon; returns how many.
EXPIRE: Final = Script("expire", UNCOUNT + """
local horizon = tonumber(ARGV[1])
local removed = 0
local start = '-'
while true do
  local batch = redis.call('XRANGE', KEYS[1], start, '+', 'COUNT', 500)
  if #batch == 0 then break end
  for _, entry in ipairs(batch) do
    local f = entry[2]
    local sender, id, at, size = '', '', 0, 0
    for j = 1, #f, 2 do
      local k = f[j]
      if k == 's' then sender = f[j + 1]
      elseif k == 'i' then id = f[j + 1]
      elseif k == 'e' then at = tonumber(f[j + 1])
      elseif k == 'f' then size = string.len(f[j + 1]) end
    end
    if at < horizon then
      redis.call('XDEL', KEYS[1], entry[1])
      redis.call('HDEL', KEYS[2], sender .. ' ' .. id)
      redis.call('HINCRBY', KEYS[3], 'b', -size)
      redis.call('HDEL', KEYS[6], sender .. ' ' .. id)
      uncount(KEYS[4], KEYS[5], sender, size)
      removed = removed + 1
    end
  end
  start = '(' .. batch[#batch][1]
end
return removed
""")

# KEYS sess; ARGV channel. A login's number, told to every session of the name (older ones end `replaced`).
CLAIM: Final = Script("claim", """
local n = redis.call('INCR', KEYS[1])
redis.call('PUBLISH', ARGV[1], 'R\\n' .. n)
return n
""")

# KEYS qi seen; ARGV sender, then message ids. Where each message of sender is: 1 still queued,
# 2 confirmed within the dedupe window, 0 neither (see securechat/server/awaited.py).
STATUS: Final = Script("status", """
local out = {}
for i = 2, #ARGV do
  local field = ARGV[1] .. ' ' .. ARGV[i]
  if redis.call('HEXISTS', KEYS[1], field) == 1 then out[#out + 1] = 1
  elseif redis.call('ZSCORE', KEYS[2], field) then out[#out + 1] = 2
  else out[#out + 1] = 0 end
end
return out
""")

# KEYS q; ARGV start count max_bytes. Like XRANGE start + COUNT count, but stops before the entry
# that would take the frames past max_bytes (the first is always returned): a session's window
# bounds what one read brings over (issue 13, item 4). Returns the entries.
FETCH: Final = Script("fetch", """
local out, total, start = {}, 0, ARGV[1]
local count, budget = tonumber(ARGV[2]), tonumber(ARGV[3])
while #out < count do
  local batch = redis.call('XRANGE', KEYS[1], start, '+', 'COUNT', math.min(count - #out, 64))
  if #batch == 0 then break end
  for _, entry in ipairs(batch) do
    local f = entry[2]
    for j = 1, #f, 2 do
      if f[j] == 'f' then total = total + string.len(f[j + 1]) end
    end
    if #out > 0 and total > budget then return out end
    out[#out + 1] = entry
  end
  start = '(' .. batch[#batch][1]
end
return out
""")

# KEYS q qi qm qs stored qf aside; ARGV sender id limit recipient ttl_ms. One more failed hand-out of a
# queued message (issue 13, item 1); at the limit it leaves the queue and its notice goes to the
# sender's aside hash (another slot, like `stored`). Returns 1 if it was set aside now, else 0.
FAILED: Final = Script("failed", UNCOUNT + """
local field = ARGV[1] .. ' ' .. ARGV[2]
local entry = redis.call('HGET', KEYS[2], field)
if not entry then return 0 end
if redis.call('HINCRBY', KEYS[6], field, 1) < tonumber(ARGV[3]) then return 0 end
local space = string.find(entry, ' ', 1, true)
local id, size = '0-' .. string.sub(entry, 1, space - 1), tonumber(string.sub(entry, space + 1))
local at, rid = '0', ''
for _, e in ipairs(redis.call('XRANGE', KEYS[1], id, id)) do
  for j = 1, #e[2], 2 do
    if e[2][j] == 'e' then at = e[2][j + 1] elseif e[2][j] == 'r' then rid = e[2][j + 1] end
  end
end
redis.call('XDEL', KEYS[1], id)
redis.call('HDEL', KEYS[2], field)
redis.call('HDEL', KEYS[6], field)
redis.call('HINCRBY', KEYS[3], 'b', -size)
uncount(KEYS[4], KEYS[5], ARGV[1], size)
if redis.call('HLEN', KEYS[2]) == 0 then redis.call('DEL', KEYS[1]) end
redis.call('HSET', KEYS[7], ARGV[4] .. ' ' .. ARGV[2], at .. ' ' .. rid)
redis.call('PEXPIRE', KEYS[7], ARGV[5])
return 1
""")

# KEYS aside. The sender's notices, removed as they are read: a flat list of field, value.
TAKE: Final = Script("take", """
local all = redis.call('HGETALL', KEYS[1])
redis.call('DEL', KEYS[1])
return all
""")

ALL: Final = (ENQUEUE, CONFIRM, EXPIRE, CLAIM, STATUS, FETCH, FAILED, TAKE)  # the registration's: redis_names.py
