-- Erases one customer atomically; the keys to remove were found by scans before the call.
-- ARGV[1] is a JSON plan:
--   depth, ready, timers, convs, mode_prefix, epoch, tombstones, hooks, hooks_due,
--   dead_hooks, dead_hooks_order, dead_letters, index (the customer's alias set): key names;
--   conversations: {{cid, record key, inbox key}}; contacts: {key}; aliases: {{key, owner}};
--   hook_ids, dead_hook_ids: {id}; letters: {exact list entry};
--   tombstones_set: {{digest, erased_at}}; new_hooks: {{id, blob index, due}}.
-- ARGV[2..] are the new hook jobs' JSON. Returns {conversations, queued events, contacts,
-- aliases, hooks, dead letters} removed.
local p = cjson.decode(ARGV[1])
local conversations, queued, contacts, aliases, hooks, letters = 0, 0, 0, 0, 0, 0
for _, c in ipairs(p.conversations) do
  local cid, record, inbox = c[1], c[2], c[3]
  local mode = redis.call('HGET', record, 'mode')
  if mode then
    redis.call('ZREM', p.mode_prefix .. mode, cid)
    conversations = conversations + 1
  end
  redis.call('DEL', record)
  local waiting = redis.call('LLEN', inbox)
  if waiting > 0 then
    redis.call('DEL', inbox)
    redis.call('DECRBY', p.depth, waiting)
    queued = queued + waiting
  end
  redis.call('ZREM', p.ready, cid)
  redis.call('ZREM', p.timers, cid)
  redis.call('ZREM', p.convs, cid)
end
for _, key in ipairs(p.contacts) do contacts = contacts + redis.call('DEL', key) end
for _, a in ipairs(p.aliases) do
  -- An alias is removed only while it still names the customer.
  if redis.call('GET', a[1]) == a[2] then
    redis.call('DEL', a[1])
    aliases = aliases + 1
  end
end
for _, id in ipairs(p.hook_ids) do
  hooks = hooks + redis.call('HDEL', p.hooks, id)
  redis.call('ZREM', p.hooks_due, id)
end
for _, id in ipairs(p.dead_hook_ids) do
  hooks = hooks + redis.call('HDEL', p.dead_hooks, id)
  redis.call('ZREM', p.dead_hooks_order, id)
end
for _, entry in ipairs(p.letters) do
  letters = letters + redis.call('LREM', p.dead_letters, 0, entry)
end
redis.call('DEL', p.index)
for _, t in ipairs(p.tombstones_set) do redis.call('HSET', p.tombstones, t[1], t[2]) end
redis.call('INCR', p.epoch)
for _, h in ipairs(p.new_hooks) do
  redis.call('HSET', p.hooks, h[1], ARGV[h[2] + 1])
  redis.call('ZADD', p.hooks_due, h[3], h[1])
end
return {conversations, queued, contacts, aliases, hooks, letters}
