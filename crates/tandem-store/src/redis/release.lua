-- Gives a lane back. ARGV: ready zset, lease key, inbox key, conversation id, token, now (ms).
-- The lane stays ready (score now) if events are still waiting, otherwise it leaves the set.
if redis.call('GET', ARGV[2]) ~= ARGV[5] then return 0 end
redis.call('DEL', ARGV[2])
if redis.call('LLEN', ARGV[3]) == 0 then
  redis.call('ZREM', ARGV[1], ARGV[4])
else
  redis.call('ZADD', ARGV[1], ARGV[6], ARGV[4])
end
return 1
