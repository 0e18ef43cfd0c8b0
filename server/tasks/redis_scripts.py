"""Lua scripts of the Redis task store: each runs atomically inside Redis, which is
what makes "failed exactly once" and "a final status is never overwritten" hold
whatever the replicas do concurrently. Keys outside KEYS (the dead replica's task
hashes) are fine on one Redis; Redis Cluster would need them in one hash slot."""

# KEYS: task, owned, finished. ARGV: status, result, error, updated_at, id, created_at.
FINISH = """
redis.call('SREM', KEYS[2], ARGV[5])
local status = redis.call('HGET', KEYS[1], 'status')
if status ~= 'queued' and status ~= 'running' then return 0 end
redis.call('HSET', KEYS[1], 'status', ARGV[1], 'updated_at', ARGV[4])
if ARGV[2] ~= '' then redis.call('HSET', KEYS[1], 'result', ARGV[2]) end
if ARGV[3] ~= '' then redis.call('HSET', KEYS[1], 'error', ARGV[3]) end
redis.call('ZADD', KEYS[3], ARGV[6], ARGV[5])
return 1
"""
# KEYS: task. ARGV: updated_at.
MARK_RUNNING = """
if redis.call('HGET', KEYS[1], 'status') ~= 'queued' then return 0 end
redis.call('HSET', KEYS[1], 'status', 'running', 'updated_at', ARGV[1])
return 1
"""
# KEYS: alive:<dead>, owned:<dead>, replicas, finished. ARGV: dead, reason, now, prefix.
# Returns -1 while the heartbeat exists, else how many tasks it failed.
REAP = """
if redis.call('EXISTS', KEYS[1]) == 1 then return -1 end
local failed = 0
for _, id in ipairs(redis.call('SMEMBERS', KEYS[2])) do
  local key = ARGV[4] .. 'task:' .. id
  local status = redis.call('HGET', key, 'status')
  if status == 'queued' or status == 'running' then
    redis.call('HSET', key, 'status', 'failed', 'error', ARGV[2], 'updated_at', ARGV[3])
    redis.call('ZADD', KEYS[4], redis.call('HGET', key, 'created_at'), id)
    failed = failed + 1
  end
end
redis.call('DEL', KEYS[2], ARGV[4] .. 'cancel:' .. ARGV[1])
redis.call('SREM', KEYS[3], ARGV[1])
return failed
"""
