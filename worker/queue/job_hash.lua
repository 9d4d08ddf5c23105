-- Write to an RQ job hash only while it still holds the enqueue the writer read. Registered
-- once per worker process and run by its digest; see QrJob in worker/queue/intake.py.
--
-- RQ's bookkeeping after a run (status, a save of the whole job, an expiry) comes after the
-- result is published. A producer that reuses the job id as soon as the reply arrives writes
-- a new job into the same hash in between; RQ's writes must then leave it alone, or the new
-- job is overwritten by the old one and never runs.
--
-- KEYS[1] the job hash                rq:job:<job_id>
-- ARGV[1] `created_at` as the writer read it (or last wrote it)
-- ARGV[2] SHA-1 of `data` as stored when the writer read it (or last wrote it)
-- ARGV[3] the write: 'hset' (ARGV[4..] field, value, ...), 'expire' (ARGV[4] seconds),
--         'persist', 'del', or 'check' (no write)
--
-- Returns the write's own reply (1 for 'check'), or -1 when the hash holds another enqueue
-- or no longer exists: nothing was written.

local key = KEYS[1]
local held = redis.call('HMGET', key, 'created_at', 'data')
if held[1] ~= ARGV[1] or not held[2] or redis.sha1hex(held[2]) ~= ARGV[2] then
  return -1
end

local op = ARGV[3]
if op == 'hset' then
  return redis.call('HSET', key, unpack(ARGV, 4))
elseif op == 'expire' then
  return redis.call('EXPIRE', key, ARGV[4])
elseif op == 'persist' then
  return redis.call('PERSIST', key)
elseif op == 'del' then
  return redis.call('DEL', key)
elseif op == 'check' then
  return 1
end
return redis.error_reply('job_hash.lua: unknown operation ' .. tostring(op))
