-- A member leaves: its heartbeat goes and it leaves the members set, so the others stop
-- counting it as live at their next tick (without waiting for the heartbeat TTL).
-- KEYS[1] this member's heartbeat  {prefix}:member:{id}
-- KEYS[2] the members set          {prefix}:members
-- ARGV[1] this member's id
redis.call('DEL', KEYS[1])
redis.call('SREM', KEYS[2], ARGV[1])
return 1
