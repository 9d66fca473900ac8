-- Extends a lane's lease while its owner is busy (a slow backend call, an LLM request).
-- ARGV: lease key, ready zset, conversation id, token, now (ms), lease (ms).
-- Returns 1 when the token still owns the lane (now held until now + lease), else 0.
if redis.call('GET', ARGV[1]) ~= ARGV[4] then return 0 end
redis.call('PEXPIRE', ARGV[1], ARGV[6])
redis.call('ZADD', ARGV[2], 'XX', tonumber(ARGV[5]) + tonumber(ARGV[6]), ARGV[3])
return 1
