-- A member's heartbeat, and the live members in the same step: this member's heartbeat key
-- is (re)set with the TTL, it joins the members set, and members whose heartbeat key has
-- expired leave the set. Returns the live members as a flat list {id, ms left, id, ms left…}:
-- the ms left tell the others when a member that stopped (crashed) will stop counting.
-- KEYS[1] this member's heartbeat  {prefix}:member:{id}   (string, PX = ttl)
-- KEYS[2] the members set          {prefix}:members
-- ARGV[1] this member's id
-- ARGV[2] the heartbeat value (JSON: id, started, slots)
-- ARGV[3] ttl, ms
-- ARGV[4] the heartbeat key prefix {prefix}:member:
-- The other members' heartbeat keys are named from the set, not passed as KEYS: fine on a
-- single Redis (shardgate's deployment), not on Redis Cluster.
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
redis.call('SADD', KEYS[2], ARGV[1])
local live = {}
for _, m in ipairs(redis.call('SMEMBERS', KEYS[2])) do
  local left = redis.call('PTTL', ARGV[4] .. m)
  if left ~= -2 then
    live[#live + 1] = m
    live[#live + 1] = left
  else
    redis.call('SREM', KEYS[2], m)
  end
end
return live
