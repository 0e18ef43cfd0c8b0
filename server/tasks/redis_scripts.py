"""Lua scripts of the Redis task store: each runs atomically inside Redis, which is
what makes "taken over exactly once" and "a final status is never overwritten" hold
whatever the replicas do concurrently. Keys outside KEYS (the dead replica's task
hashes) are fine on one Redis; Redis Cluster would need them in one hash slot."""

# KEYS: task, owned, finished. ARGV: status, result, error, updated_at, id, created_at,
# replica. Only the run's owner writes its ending: a replica presumed dead whose tasks
# were taken over finds its finish refused, so the retry's result is the one kept.
FINISH = """
redis.call('SREM', KEYS[2], ARGV[5])
if redis.call('HGET', KEYS[1], 'replica') ~= ARGV[7] then return 0 end
local status = redis.call('HGET', KEYS[1], 'status')
if status ~= 'queued' and status ~= 'running' then return 0 end
redis.call('HSET', KEYS[1], 'status', ARGV[1], 'updated_at', ARGV[4])
if ARGV[2] ~= '' then redis.call('HSET', KEYS[1], 'result', ARGV[2]) end
if ARGV[3] ~= '' then redis.call('HSET', KEYS[1], 'error', ARGV[3]) end
redis.call('ZADD', KEYS[3], ARGV[6], ARGV[5])
return 1
"""
# KEYS: task. ARGV: updated_at, replica.
MARK_RUNNING = """
if redis.call('HGET', KEYS[1], 'replica') ~= ARGV[2] then return 0 end
if redis.call('HGET', KEYS[1], 'status') ~= 'queued' then return 0 end
redis.call('HSET', KEYS[1], 'status', 'running', 'updated_at', ARGV[1])
return 1
"""
# KEYS: alive:<dead>, owned:<dead>, replicas, finished, owned:<taker>.
# ARGV: dead, who died (words), now, prefix, taker, max attempts, DIED_REASON, SPENT_REASON.
# Returns -1 while the heartbeat exists, else {how many it failed, ids it took over...}:
# each unfinished task gets the reason appended to its failures, then is queued again
# under the taker or, with its attempts spent, failed with every reason.
REAP = """
if redis.call('EXISTS', KEYS[1]) == 1 then return -1 end
local failed, taken = 0, {}
for _, id in ipairs(redis.call('SMEMBERS', KEYS[2])) do
  local key = ARGV[4] .. 'task:' .. id
  local status = redis.call('HGET', key, 'status')
  if status == 'queued' or status == 'running' then
    local attempts = tonumber(redis.call('HGET', key, 'attempts') or '1')
    local failures = cjson.decode(redis.call('HGET', key, 'failures') or '[]')
    table.insert(failures, string.format(ARGV[7], ARGV[2], status, attempts))
    local encoded = cjson.encode(failures)
    if attempts >= tonumber(ARGV[6]) then
      local error = string.format(ARGV[8], attempts, table.concat(failures, '; '))
      redis.call('HSET', key, 'status', 'failed', 'error', error, 'failures', encoded,
        'updated_at', ARGV[3])
      redis.call('ZADD', KEYS[4], redis.call('HGET', key, 'created_at'), id)
      failed = failed + 1
    else
      redis.call('HSET', key, 'status', 'queued', 'attempts', attempts + 1,
        'failures', encoded, 'replica', ARGV[5], 'updated_at', ARGV[3])
      redis.call('SADD', KEYS[5], id)
      table.insert(taken, id)
    end
  end
end
redis.call('DEL', KEYS[2], ARGV[4] .. 'cancel:' .. ARGV[1])
redis.call('SREM', KEYS[3], ARGV[1])
table.insert(taken, 1, failed)
return taken
"""
