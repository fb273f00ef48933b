-- Acquisition of slot leases: for each slot, the lease is taken when nobody holds it (SET NX
-- PX) or when it still names this member (a restart, or a lease this member stopped serving
-- while Redis kept it); either way the slot's fencing epoch is raised, so every write of an
-- earlier holder (or an earlier life of this one) is refused by the queue's scripts.
-- KEYS[2i-1] the lease        {prefix}:lease:{slot}  (string member id, PX = ttl)
-- KEYS[2i]   the slot epoch   {prefix}:epoch:{slot}  (the one the queue scripts check)
-- ARGV[1] this member's id
-- ARGV[2] ttl, ms
-- Returns one integer per slot: the new epoch, or 0 when another member holds the lease.
local out = {}
for i = 1, #KEYS, 2 do
  local took = redis.call('SET', KEYS[i], ARGV[1], 'NX', 'PX', ARGV[2])
  if not took and redis.call('GET', KEYS[i]) == ARGV[1] then
    redis.call('PEXPIRE', KEYS[i], ARGV[2])
    took = true
  end
  if took then
    out[#out + 1] = redis.call('INCR', KEYS[i + 1])
  else
    out[#out + 1] = 0
  end
end
return out
