-- Merges activity into a number's hash, creating it when new: times only move forward and
-- held counts add. ARGV: number hash, numbers index, number id, initial data JSON, WABA id
-- ('' when unknown), phone time ('' when none), API time ('' when none), held count.
local key, index, id = ARGV[1], ARGV[2], ARGV[3]
redis.call('ZADD', index, 0, id)
if redis.call('HEXISTS', key, 'data') == 0 then
  redis.call('HSET', key, 'data', ARGV[4], 'rev', 0)
end
if ARGV[5] ~= '' then redis.call('HSET', key, 'waba', ARGV[5]) end
local function later(field, value)
  if value == '' then return end
  local current = tonumber(redis.call('HGET', key, field) or '0')
  if tonumber(value) > current then redis.call('HSET', key, field, value) end
end
later('phone_at', ARGV[6])
later('api_at', ARGV[7])
if tonumber(ARGV[8]) > 0 then redis.call('HINCRBY', key, 'held', ARGV[8]) end
return 1
