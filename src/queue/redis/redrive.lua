-- Redrive or purge of a dead letter: it leaves the dead-letter stream; a redrive puts its
-- admission back in the work stream (a new entry), a purge drops it.
-- KEYS[1] work stream            {prefix}:q:{slot}
-- KEYS[2] runId -> entry id      {prefix}:ids:{slot}   (hash)
-- KEYS[3] dead-letter stream     {prefix}:dead:{slot}
-- KEYS[4] runId -> dead entry id {prefix}:dids:{slot}  (hash)
-- KEYS[5] slot epoch             {prefix}:epoch:{slot} (fencing; absent = 0)
-- ARGV[1] the caller's epoch of the slot
-- ARGV[2] runId
-- ARGV[3] "redrive" | "purge"
-- Returns 1 when done, 0 when the dead letter was not there (already trimmed by age).
local epoch = redis.call('GET', KEYS[5]) or '0'
if epoch ~= ARGV[1] then
  return redis.error_reply('FENCED slot epoch is ' .. epoch .. ', caller has ' .. ARGV[1])
end
local did = redis.call('HGET', KEYS[4], ARGV[2])
if not did then return 0 end
redis.call('HDEL', KEYS[4], ARGV[2])
local e = redis.call('XRANGE', KEYS[3], did, did)
redis.call('XDEL', KEYS[3], did)
if #e == 0 or ARGV[3] ~= 'redrive' then return 0 end
local acc = nil
local f = e[1][2]
for i = 1, #f, 2 do
  if f[i] == 'acc' then acc = f[i + 1] end
end
if not acc then return 0 end
local id = redis.call('XADD', KEYS[1], '*', 'run', ARGV[2], 'r', acc)
redis.call('HSET', KEYS[2], ARGV[2], id)
return 1
