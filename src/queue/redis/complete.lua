-- Completion of a run: its admission entry leaves the work stream (XDEL; never trimmed by
-- length) and its final answer is kept for the dedup window, so a retry with the same
-- idempotency key after a restart gets the same answer.
-- KEYS[1] work stream       {prefix}:q:{slot}
-- KEYS[2] runId -> entry id {prefix}:ids:{slot}   (hash)
-- KEYS[3] results           {prefix}:res:{slot}   (hash runId -> {"s":session,"r":record})
-- KEYS[4] result expiry     {prefix}:rx:{slot}    (zset runId, score = expiry ms)
-- KEYS[5] slot epoch        {prefix}:epoch:{slot} (fencing; absent = 0)
-- ARGV[1] the caller's epoch of the slot: a paused old owner must not complete
-- ARGV[2] runId
-- ARGV[3] the result (JSON)
-- ARGV[4] now, ms
-- ARGV[5] how long the result is kept, ms
-- Returns 1 when the admission entry was removed, 0 when there was none.
local epoch = redis.call('GET', KEYS[5]) or '0'
if epoch ~= ARGV[1] then
  return redis.error_reply('FENCED slot epoch is ' .. epoch .. ', caller has ' .. ARGV[1])
end
local id = redis.call('HGET', KEYS[2], ARGV[2])
if id then
  redis.call('XDEL', KEYS[1], id)
  redis.call('HDEL', KEYS[2], ARGV[2])
end
-- Expired results go, a bounded number per call.
local old = redis.call('ZRANGEBYSCORE', KEYS[4], '-inf', ARGV[4], 'LIMIT', 0, 100)
if #old > 0 then
  redis.call('HDEL', KEYS[3], unpack(old))
  redis.call('ZREM', KEYS[4], unpack(old))
end
redis.call('HSET', KEYS[3], ARGV[2], ARGV[3])
redis.call('ZADD', KEYS[4], tonumber(ARGV[4]) + tonumber(ARGV[5]), ARGV[2])
if id then return 1 end
return 0
