-- Deliver one job result: store it, stream it (unless its payload said `stream: false`) and
-- push it to the producer's reply list, all or nothing, once per enqueue. Registered once per worker process and run by its
-- digest (EVALSHA); see worker/queue/replies.py.
--
-- KEYS[1] result key          qrw:result:<job_id>
-- KEYS[2] results stream      qrw:results
-- KEYS[3] delivery key        qrw:delivery:<job_id>
-- KEYS[4] reply list          (optional) the payload's reply_to
-- ARGV[1] result JSON (an object with at least one member)
-- ARGV[2] TTL seconds of the result and its delivery token (the payload's result_ttl, or
--         QRW_RESULT_TTL)
-- ARGV[3] approximate cap of the results stream
-- ARGV[4] job id
-- ARGV[5] "1" or "0": the result's ok
-- ARGV[6] delivery token: one per enqueue of the job, "" when the caller has none
-- ARGV[7] the prefix every reply list must start with (qrw:reply:)
-- ARGV[8] TTL seconds of the reply list (QRW_RESULT_TTL: a list many jobs share outlives
--         any one of their results)
-- ARGV[9] "1" to add the result to the results stream, "0" to leave it out (a producer
--         collecting from its own reply list, as a backfill does)
--
-- Returns {1, reply_error} when delivered ("" when the reply was pushed or none was asked
-- for), {0, ""} when this enqueue's result was already delivered.
--
-- A script is atomic towards other clients but is not rolled back when a command fails
-- half-way, so everything that could fail is checked before the first write.

local result_key, stream, delivery_key, reply = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local body, ttl, cap, job_id, ok, token, prefix, reply_ttl, streamed =
  ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[8], ARGV[9] == '1'

-- Once per enqueue. A job run again after its worker died carries the same token and is a
-- no-op; a new job reusing the id carries another token and replaces the old result.
-- Without a token, the first result under the id stays (the behaviour before tokens).
if token == '' then
  if redis.call('EXISTS', result_key) == 1 then
    return {0, ''}
  end
elseif redis.call('GET', delivery_key) == token then
  return {0, ''}
end

if streamed then
  local stream_type = redis.call('TYPE', stream).ok
  if stream_type ~= 'none' and stream_type ~= 'stream' then
    return redis.error_reply('the results stream ' .. stream .. ' holds a ' .. stream_type ..
      ', not a stream: nothing was written')
  end
end

-- The reply list is the only key a producer names. It must be ours (under the prefix) and
-- a list or absent; otherwise the result is still stored and streamed, saying why no
-- reply was pushed, and the key is not touched.
local reply_error, reply_message = '', ''
if reply then
  if string.sub(reply, 1, #prefix) ~= prefix then
    reply_error = 'reply_outside_namespace'
    reply_message = 'reply_to is not under ' .. prefix .. ': nothing was pushed'
  else
    local reply_type = redis.call('TYPE', reply).ok
    if reply_type ~= 'none' and reply_type ~= 'list' then
      reply_error = 'reply_not_a_list'
      reply_message = 'reply_to names an existing ' .. reply_type .. ', not a list: nothing was pushed'
    end
  end
end
if reply_error ~= '' then
  -- The body is a JSON object from json.dumps with at least one member; the prefix and
  -- the type names quoted are plain ASCII without quotes or backslashes.
  body = '{"reply_error":{"code":"' .. reply_error .. '","message":"' .. reply_message ..
    '"},' .. string.sub(body, 2)
end

redis.call('SET', result_key, body, 'EX', ttl)
if token ~= '' then
  redis.call('SET', delivery_key, token, 'EX', ttl)
end
if reply_error ~= '' then
  if streamed then
    redis.call('XADD', stream, 'MAXLEN', '~', cap, '*',
      'job_id', job_id, 'ok', ok, 'result', body, 'reply_error', reply_error)
  end
else
  if streamed then
    redis.call('XADD', stream, 'MAXLEN', '~', cap, '*', 'job_id', job_id, 'ok', ok, 'result', body)
  end
  if reply then
    redis.call('RPUSH', reply, body)
    redis.call('EXPIRE', reply, reply_ttl)
  end
end
return {1, reply_error}
