-- Admission of one message into its slot's work stream: at most once per runId and per
-- dedup key within the dedup window. The gateway acknowledges the client only after this
-- answered (with appendfsync always, the entry is on disk by then).
-- KEYS[1] work stream       {prefix}:q:{slot}
-- KEYS[2] runId -> entry id {prefix}:ids:{slot}   (hash)
-- KEYS[3] dedup key         {prefix}:dd:{slot}:{dedupKey}  (string, PX = dedup window)
-- KEYS[4] slot epoch        {prefix}:epoch:{slot} (fencing; absent = 0)
-- ARGV[1] the caller's epoch of the slot
-- ARGV[2] runId
-- ARGV[3] the admission record (JSON)
-- ARGV[4] dedup window, ms
-- Returns {1, runId, entryId} when added; {0, runId, entryId} when this runId is already
-- there; {0, runIdOfTheFirst, ""} for a duplicate dedup key (the existing entry answers).
local epoch = redis.call('GET', KEYS[4]) or '0'
if epoch ~= ARGV[1] then
  return redis.error_reply('FENCED slot epoch is ' .. epoch .. ', caller has ' .. ARGV[1])
end
local have = redis.call('HGET', KEYS[2], ARGV[2])
if have then
  return {0, ARGV[2], have}
end
local first = redis.call('GET', KEYS[3])
if first then
  return {0, first, ''}
end
local id = redis.call('XADD', KEYS[1], '*', 'run', ARGV[2], 'r', ARGV[3])
redis.call('HSET', KEYS[2], ARGV[2], id)
redis.call('SET', KEYS[3], ARGV[2], 'PX', ARGV[4])
return {1, ARGV[2], id}
