-- Customer resolution (the rule of src/customers.rs), atomically for every lookup of a call.
-- ARGV[1]: alias key prefix of the tenant; ARGV[2]: prefix of the tenant's per-customer alias
-- sets (each alias written is added to its customer's set, which an erasure reads). Then per
-- lookup: number of find aliases, the find aliases ('kind:value'), number of link aliases,
-- the link aliases, a fresh customer id.
-- Returns per lookup: customer id, created (1|0), number linked, the 1-based link indexes
-- linked, number of conflicts, then (link index, owner) per conflict.
local prefix = ARGV[1]
local index = ARGV[2]
local out = {}
local i = 3
while i <= #ARGV do
  local nfind = tonumber(ARGV[i])
  local find = {}
  for j = 1, nfind do find[j] = ARGV[i + j] end
  i = i + nfind + 1
  local nlink = tonumber(ARGV[i])
  local link = {}
  for j = 1, nlink do link[j] = ARGV[i + j] end
  i = i + nlink + 1
  local fresh = ARGV[i]
  i = i + 1
  local customer = false
  for _, alias in ipairs(find) do
    customer = redis.call('GET', prefix .. alias)
    if customer then break end
  end
  local created = 0
  if not customer then
    customer = fresh
    created = 1
  end
  local linked, conflicts = {}, {}
  for j, alias in ipairs(link) do
    local owner = redis.call('GET', prefix .. alias)
    if not owner then
      redis.call('SET', prefix .. alias, customer)
      redis.call('SADD', index .. customer, alias)
      linked[#linked + 1] = j
    elseif owner ~= customer then
      conflicts[#conflicts + 1] = j
      conflicts[#conflicts + 1] = owner
    end
  end
  out[#out + 1] = customer
  out[#out + 1] = created
  out[#out + 1] = #linked
  for _, j in ipairs(linked) do out[#out + 1] = j end
  out[#out + 1] = #conflicts / 2
  for _, v in ipairs(conflicts) do out[#out + 1] = v end
end
return out
