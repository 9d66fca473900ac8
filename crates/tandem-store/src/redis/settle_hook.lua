-- Records the outcome of a hook delivery attempt, unless it was settled already.
-- ARGV: hooks hash, due zset, dead hash, dead order zset, id, outcome
-- ('delivered' | 'retry' | 'dead'), new job JSON, score (due time or time of death).
local hooks, due, dead, dead_order, id = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
if redis.call('HEXISTS', hooks, id) == 0 then return 0 end
if ARGV[6] == 'retry' then
  redis.call('HSET', hooks, id, ARGV[7])
  redis.call('ZADD', due, ARGV[8], id)
  return 1
end
redis.call('HDEL', hooks, id)
redis.call('ZREM', due, id)
if ARGV[6] == 'dead' then
  redis.call('HSET', dead, id, ARGV[7])
  redis.call('ZADD', dead_order, ARGV[8], id)
end
return 1
