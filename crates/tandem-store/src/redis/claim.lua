-- Claims the lane of the conversation that has waited longest.
-- ARGV: ready zset, lease key prefix, now (ms), lease (ms), token.
-- A claimed lane stays in the ready set with its score pushed to the lease's end, so it
-- becomes claimable again by itself if its owner dies.
local ids = redis.call('ZRANGEBYSCORE', ARGV[1], '-inf', ARGV[3], 'LIMIT', 0, 1)
if #ids == 0 then return false end
local cid = ids[1]
redis.call('ZADD', ARGV[1], tonumber(ARGV[3]) + tonumber(ARGV[4]), cid)
redis.call('SET', ARGV[2] .. '{' .. cid .. '}', ARGV[5], 'PX', ARGV[4])
return cid
