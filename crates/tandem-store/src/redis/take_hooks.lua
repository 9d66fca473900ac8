-- Takes the hook deliveries due at ARGV[3] (at most ARGV[4]) and holds them until ARGV[5]:
-- a delivery not settled by then is offered again.
-- ARGV: hooks hash, due zset, now, limit, held-until.
local ids = redis.call('ZRANGEBYSCORE', ARGV[2], '-inf', ARGV[3], 'LIMIT', 0, tonumber(ARGV[4]))
local out = {}
for _, id in ipairs(ids) do
  local body = redis.call('HGET', ARGV[1], id)
  if body then
    redis.call('ZADD', ARGV[2], ARGV[5], id)
    table.insert(out, body)
  else
    redis.call('ZREM', ARGV[2], id)
  end
end
return out
