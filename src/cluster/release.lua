-- Release of leases this member holds (compare-and-delete: a lease another member took is
-- left alone). The epoch stays: the next holder raises it.
-- KEYS[i] a lease  {prefix}:lease:{slot}
-- ARGV[1] this member's id
-- Returns how many leases were deleted.
local n = 0
for i = 1, #KEYS do
  if redis.call('GET', KEYS[i]) == ARGV[1] then
    redis.call('DEL', KEYS[i])
    n = n + 1
  end
end
return n
