-- Dead-lettering of a run: its admission entry moves from the work stream to the slot's
-- dead-letter stream, which is trimmed by age (MINID ~), never by length.
-- KEYS[1] work stream            {prefix}:q:{slot}
-- KEYS[2] runId -> entry id      {prefix}:ids:{slot}   (hash)
-- KEYS[3] dead-letter stream     {prefix}:dead:{slot}
-- KEYS[4] runId -> dead entry id {prefix}:dids:{slot}  (hash)
-- KEYS[5] slot epoch             {prefix}:epoch:{slot} (fencing; absent = 0)
-- ARGV[1] the caller's epoch of the slot
-- ARGV[2] runId
-- ARGV[3] the dead-letter record (JSON)
-- ARGV[4] oldest dead-letter entry id kept (now - deadLetter.maxAge, ms)
-- Returns 1 when moved, 0 when the run had no admission entry.
local epoch = redis.call('GET', KEYS[5]) or '0'
if epoch ~= ARGV[1] then
  return redis.error_reply('FENCED slot epoch is ' .. epoch .. ', caller has ' .. ARGV[1])
end
local id = redis.call('HGET', KEYS[2], ARGV[2])
if not id then return 0 end
redis.call('HDEL', KEYS[2], ARGV[2])
local e = redis.call('XRANGE', KEYS[1], id, id)
if #e == 0 then return 0 end
local acc = nil
local f = e[1][2]
for i = 1, #f, 2 do
  if f[i] == 'r' then acc = f[i + 1] end
end
redis.call('XDEL', KEYS[1], id)
if not acc then return 0 end
local did = redis.call('XADD', KEYS[3], 'MINID', '~', ARGV[4], '*',
  'run', ARGV[2], 'acc', acc, 'r', ARGV[3])
redis.call('HSET', KEYS[4], ARGV[2], did)
return 1
