-- Reserves a business number's next send slot. ARGV: slot key, now (ms), interval (ms).
-- The key holds the number's next free slot; it expires once it is in the past.
local now = tonumber(ARGV[2])
local interval = tonumber(ARGV[3])
local next_free = tonumber(redis.call('GET', ARGV[1]) or '0')
local slot = math.max(next_free, now)
redis.call('SET', ARGV[1], string.format('%d', slot + interval), 'PX', string.format('%d', slot - now + interval + 60000))
return string.format('%d', slot)
