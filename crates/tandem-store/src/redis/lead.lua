-- Takes or renews the leadership key ARGV[1] for holder ARGV[2] during ARGV[3] ms.
-- Returns 1 when the holder leads.
local current = redis.call('GET', ARGV[1])
if current and current ~= ARGV[2] then return 0 end
redis.call('SET', ARGV[1], ARGV[2], 'PX', ARGV[3])
return 1
