-- Deliver one job result exactly once, atomically.
-- KEYS[1] result key, KEYS[2] results stream, KEYS[3] (optional) the producer's reply list
-- ARGV[1] result JSON, ARGV[2] TTL seconds, ARGV[3] stream cap, ARGV[4] job id, ARGV[5] "1"/"0" ok
-- A job run again after its worker died may reach this point twice; the NX on the
-- result key makes the second delivery a no-op instead of a duplicate reply.
if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'EX', ARGV[2]) then
  return 0
end
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], '*', 'job_id', ARGV[4], 'ok', ARGV[5], 'result', ARGV[1])
if KEYS[3] then
  redis.call('RPUSH', KEYS[3], ARGV[1])
  redis.call('EXPIRE', KEYS[3], ARGV[2])
end
return 1
