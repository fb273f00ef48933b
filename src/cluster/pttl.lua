-- Time left on leases (read-only): lets a member wake exactly when the lease of a member
-- that died expires, instead of at its next tick.
-- KEYS[i] a lease  {prefix}:lease:{slot}
-- Returns one integer per lease: ms left, -2 when gone, -1 without a TTL.
local out = {}
for i = 1, #KEYS do
  out[i] = redis.call('PTTL', KEYS[i])
end
return out
