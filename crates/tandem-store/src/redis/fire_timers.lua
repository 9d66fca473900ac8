-- Moves due idle timers into their conversations' inboxes.
-- ARGV: timers zset, seq key, ready zset, depth key, inbox key prefix, now (ms), limit, item JSON.
local due = redis.call('ZRANGEBYSCORE', ARGV[1], '-inf', ARGV[6], 'LIMIT', 0, tonumber(ARGV[7]))
for _, cid in ipairs(due) do
  redis.call('ZREM', ARGV[1], cid)
  local seq = redis.call('INCR', ARGV[2])
  redis.call('RPUSH', ARGV[5] .. '{' .. cid .. '}', seq .. ':' .. ARGV[8])
  redis.call('ZADD', ARGV[3], 'NX', ARGV[6], cid)
  redis.call('INCR', ARGV[4])
end
return #due
