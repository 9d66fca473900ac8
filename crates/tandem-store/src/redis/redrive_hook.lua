-- Moves a dead hook delivery back to the outbox, due at ARGV[7].
-- ARGV: hooks hash, due zset, dead hash, dead order zset, id, job JSON (attempts reset), now.
if redis.call('HDEL', ARGV[3], ARGV[5]) == 0 then return 0 end
redis.call('ZREM', ARGV[4], ARGV[5])
redis.call('HSET', ARGV[1], ARGV[5], ARGV[6])
redis.call('ZADD', ARGV[2], ARGV[7], ARGV[5])
return 1
