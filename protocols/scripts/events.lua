-- provision step events: what one worker process buffered for one machine, written in one call
-- (protocols/events.md §2-3). One script call instead of one command per event keeps the cost of
-- events on Redis and on the worker small; nothing here touches the queue's state.
--
-- Call:  EVALSHA <sha> 3 <B>:events <B>:progress <B>:metrics
--                <events_maxlen> <progress_ttl_seconds>
--                <n_events> <event_json> ...               (appended in order: XADD <B>:events * event <json>,
--                                                           then XTRIM <B>:events MAXLEN ~ events_maxlen)
--                <n_progress> <job_id> <progress_json|""> ... (HSET, or HDEL when the JSON is empty;
--                                                           EXPIRE <B>:progress progress_ttl after a HSET)
--                <field> <amount> ...                      (HINCRBY <B>:metrics field amount)
-- Returns the number of events appended. Errors are `BAD_REQUEST <sentence>`.

local K_EVENTS, K_PROGRESS, K_METRICS = KEYS[1], KEYS[2], KEYS[3]
if not K_EVENTS or not K_PROGRESS or not K_METRICS then
  return redis.error_reply("BAD_REQUEST events.lua needs the keys B:events, B:progress and B:metrics")
end
local base = string.match(K_EVENTS, "^(.*):events$")
if not base or K_PROGRESS ~= base .. ":progress" or K_METRICS ~= base .. ":metrics" then
  return redis.error_reply("BAD_REQUEST the keys must be B:events, B:progress and B:metrics of one machine")
end

local maxlen = tonumber(ARGV[1]) or 10000
local ttl = tonumber(ARGV[2]) or 86400
local i = 3
local n = tonumber(ARGV[i]) or 0
i = i + 1
for _ = 1, n do
  redis.call("XADD", K_EVENTS, "*", "event", ARGV[i])
  i = i + 1
end
if n > 0 then redis.call("XTRIM", K_EVENTS, "MAXLEN", "~", maxlen) end

local p = tonumber(ARGV[i]) or 0
i = i + 1
local touched = false
for _ = 1, p do
  local job, json = ARGV[i], ARGV[i + 1]
  i = i + 2
  if json == "" then
    redis.call("HDEL", K_PROGRESS, job)
  else
    redis.call("HSET", K_PROGRESS, job, json)
    touched = true
  end
end
if touched then redis.call("EXPIRE", K_PROGRESS, ttl) end

while ARGV[i] and ARGV[i + 1] do
  redis.call("HINCRBY", K_METRICS, ARGV[i], tonumber(ARGV[i + 1]) or 0)
  i = i + 2
end
return n
