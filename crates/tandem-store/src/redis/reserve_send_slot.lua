-- Reserves a business number's next send slot in a sliding one-second window.
-- ARGV: slots key, now (ms), sends allowed per second.
-- The key is a list of the number's latest slots (at most `rate`, oldest first). A new send
-- may start at `now`, unless `rate` slots already lie within the second before it: then it
-- starts one second after the oldest of them. So no one-second window ever holds more than
-- `rate` sends, and a quiet number may send a burst of up to `rate` at once.
local key = ARGV[1]
local now = tonumber(ARGV[2])
local rate = tonumber(ARGV[3])
local slot = now
if redis.call('LLEN', key) >= rate then
  local oldest = tonumber(redis.call('LINDEX', key, -rate))
  slot = math.max(now, oldest + 1000)
end
local last = tonumber(redis.call('LINDEX', key, -1) or '0')
slot = math.max(slot, last)
redis.call('RPUSH', key, string.format('%d', slot))
redis.call('LTRIM', key, -rate, -1)
redis.call('PEXPIRE', key, string.format('%d', slot - now + 2000))
return string.format('%d', slot)
