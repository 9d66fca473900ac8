-- The common ingest: conversation events without a pause, and dead letters. One round trip,
-- no JSON decoding. Each item is stored only if its dedupe key was not set (SET NX), so
-- retries and duplicates inside one delivery are dropped here, atomically.
-- ARGV: seq key, ready zset, depth key, dead-letter list, dead-letter seq key, now (ms),
--       dedupe ttl (ms), identity epoch key, the epoch the customers were resolved under
--       ('' when nothing was resolved), then 5 per item: kind ('q' inbox | 'd' dead letter),
--       dedupe key, inbox key, conversation id, payload.
-- Returns one 1 (stored) or 0 (duplicate) per item, or {-1, epoch} when an erasure raised
-- the identity epoch since the customers were resolved (nothing written).
if ARGV[9] ~= '' then
  local epoch = tonumber(redis.call('GET', ARGV[8]) or '0')
  if epoch ~= tonumber(ARGV[9]) then return {-1, epoch} end
end
local out = {}
local i = 10
while i <= #ARGV do
  local kind, dedupe, inbox, cid, payload = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4]
  if redis.call('SET', dedupe, '1', 'NX', 'PX', ARGV[7]) then
    if kind == 'q' then
      local seq = redis.call('INCR', ARGV[1])
      redis.call('RPUSH', inbox, seq .. ':' .. payload)
      redis.call('ZADD', ARGV[2], 'NX', ARGV[6], cid)
      redis.call('INCR', ARGV[3])
    else
      local id = redis.call('INCR', ARGV[5])
      redis.call('LPUSH', ARGV[4], id .. ':' .. payload)
    end
    out[#out + 1] = 1
  else
    out[#out + 1] = 0
  end
  i = i + 5
end
return out
