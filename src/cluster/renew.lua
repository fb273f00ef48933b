-- Renewal of this member's leases: each lease's TTL is reset only where it still names this
-- member (compare-and-set; a lease that expired or was taken is not touched).
-- KEYS[i] a lease  {prefix}:lease:{slot}
-- ARGV[1] this member's id
-- ARGV[2] ttl, ms
-- Returns one integer per lease: 1 renewed, 0 no longer this member's.
local out = {}
for i = 1, #KEYS do
  if redis.call('GET', KEYS[i]) == ARGV[1] then
    redis.call('PEXPIRE', KEYS[i], ARGV[2])
    out[i] = 1
  else
    out[i] = 0
  end
end
return out
