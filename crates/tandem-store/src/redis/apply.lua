-- Applies one write plan atomically: first every guard, then every write.
-- ARGV[1] is the plan as JSON (see `Plan` in redis.rs); ARGV[2..] are the large values it
-- refers to by index (records, events), passed apart so they are never decoded here.
-- Returns {'ok'}, {'conflict', what}, {'lease_lost'} or {'stale', epoch} (an erasure raised
-- the identity epoch since the plan's customers were resolved). Guards run before any write,
-- so a refused plan changes nothing.
local plan = cjson.decode(ARGV[1])
local k = plan.keys
local function blob(i) return ARGV[i + 1] end

if plan.epoch ~= cjson.null then
  local epoch = tonumber(redis.call('GET', plan.epoch[1]) or '0')
  if epoch ~= tonumber(plan.epoch[2]) then return {'stale', tostring(epoch)} end
end

for _, key in ipairs(plan.absent) do
  if redis.call('EXISTS', key) == 1 then return {'conflict', key} end
end
for _, g in ipairs(plan.revs) do
  local current = tonumber(redis.call('HGET', g[1], 'rev') or '0')
  if current ~= tonumber(g[2]) then return {'conflict', g[1]} end
end
for _, g in ipairs(plan.equals) do
  local want = g[2]
  if want == cjson.null then want = false end
  if redis.call('GET', g[1]) ~= want then return {'conflict', g[1]} end
end
if plan.lease ~= cjson.null then
  if redis.call('GET', plan.lease[1]) ~= plan.lease[2] then return {'lease_lost'} end
end
-- A lane commit names the first and last of the events it applied. Only the lane owner
-- pops and everything else appends, so equal ends mean the same events.
local function starts_with(entry, seq)
  local want = seq .. ':'
  return entry and string.sub(entry, 1, #want) == want
end
if plan.head ~= cjson.null then
  if not starts_with(redis.call('LINDEX', plan.head[1], 0), plan.head[2]) then return {'conflict', 'head'} end
  if not starts_with(redis.call('LINDEX', plan.head[1], plan.head[4] - 1), plan.head[3]) then return {'conflict', 'head'} end
end

if plan.lease ~= cjson.null then
  redis.call('PEXPIRE', plan.lease[1], plan.lease[3])
end
if plan.head ~= cjson.null then
  redis.call('LTRIM', plan.head[1], plan.head[4], -1)
  redis.call('DECRBY', k.depth, plan.head[4])
end
for _, d in ipairs(plan.set_px) do redis.call('SET', d[1], d[2], 'PX', d[3]) end
for _, s in ipairs(plan.set) do redis.call('SET', s[1], blob(s[2])) end
for _, c in ipairs(plan.convs) do
  -- The mode indexes change only when the mode does; a new record joins the list of all.
  local old = redis.call('HGET', c.key, 'mode')
  redis.call('HSET', c.key, 'rev', c.rev, 'data', blob(c.data), 'mode', c.mode)
  if old ~= c.mode then
    if old then
      redis.call('ZREM', k.mode_prefix .. old, c.cid)
    else
      redis.call('ZADD', k.convs, 0, c.cid)
    end
    redis.call('ZADD', k.mode_prefix .. c.mode, 0, c.cid)
  end
end
for _, e in ipairs(plan.enqueue) do
  local seq = redis.call('INCR', k.seq)
  redis.call('RPUSH', e[1], seq .. ':' .. blob(e[3]))
  redis.call('ZADD', k.ready, 'NX', plan.now, e[2])
  redis.call('INCR', k.depth)
end
for _, t in ipairs(plan.timers) do
  if t[2] == cjson.null then
    redis.call('ZREM', k.timers, t[1])
  else
    redis.call('ZADD', k.timers, t[2], t[1])
  end
end
for _, n in ipairs(plan.numbers) do
  redis.call('HSET', n[1], 'rev', n[2], 'data', blob(n[3]))
end
for _, h in ipairs(plan.hooks) do
  redis.call('HSET', k.hooks, h[1], blob(h[2]))
  redis.call('ZADD', k.hooks_due, h[3], h[1])
end
for _, letter in ipairs(plan.dead_letters) do
  local id = redis.call('INCR', k.dead_letter_seq)
  redis.call('LPUSH', k.dead_letters, id .. ':' .. blob(letter))
end
return {'ok'}
