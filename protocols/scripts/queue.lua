-- provision job queue (protocol 2): every state transition of a machine's plan, in one script.
--
-- Call:  EVALSHA <sha> 14 <B>:status <B>:ready <B>:active <B>:delayed <B>:wake
--                       <B>:failures <B>:workers <B>:heartbeats <B>:events
--                       <B>:jobs <B>:previous <B>:plans <B>:progress <B>:metrics
--                       <op> <B> <op arguments...>
-- where <B> is "<prefix>:{<machine_id>}" (the hash tag keeps one machine's keys in one cluster slot).
--
-- Every key the script touches is one of these 14 declared keys, so a call never leaves its slot and
-- is accepted by Redis Cluster during a slot migration and by proxies that check declared keys. Job
-- records are fields of B:jobs ("<job_id>|<field>"), the plan's own fields are "|<field>" there.
--
-- Each operation is documented below in the style of BullMQ's scripts (Input / Output), and in
-- protocols/redis.md. Errors are error replies whose first word is a code (PLAN_INVALID,
-- MACHINE_BUSY, BAD_REQUEST, PROTOCOL_MISMATCH).
--
-- Time comes from the server (TIME), so leases never depend on the clocks of workers.

local PROTOCOL = "2"

local K_STATUS, K_READY, K_ACTIVE, K_DELAYED, K_WAKE = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local K_FAILURES, K_WORKERS, K_HEARTBEATS, K_EVENTS = KEYS[6], KEYS[7], KEYS[8], KEYS[9]
local K_JOBS, K_PREVIOUS, K_PLANS, K_PROGRESS, K_METRICS = KEYS[10], KEYS[11], KEYS[12], KEYS[13], KEYS[14]

local op = ARGV[1]
local base = ARGV[2]

local WAKE_MARKERS = 64          -- at most this many idle workers are woken at once
local HARD_MAX_PAYLOAD = 1048576 -- bytes of one job's payload, whatever the caller asks
local HARD_MAX_JOBS = 100000
local MAX_REASONS = 1000
local MAX_BATCH = 1000           -- jobs in one claim or complete_many call
local DEAD_WORKER_MS = 600000    -- a worker silent this long is removed from B:workers / B:heartbeats
local EVENTS_MAX_AGE_MS = 604800000 -- B:events entries older than this are trimmed; an idle stream expires
local WAKE_TTL_S = 3600          -- markers nobody took are not kept forever

-- cjson writes an empty table as {}; lists of ids are written by hand so they stay JSON arrays.
local function encode_list(items)
  local parts = {}
  for i, item in ipairs(items) do parts[i] = cjson.encode(item) end
  return "[" .. table.concat(parts, ",") .. "]"
end

local function fail(code, sentence)
  return redis.error_reply(code .. " " .. sentence)
end

local KEY_NAMES = { "status", "ready", "active", "delayed", "wake", "failures", "workers", "heartbeats", "events",
                    "jobs", "previous", "plans", "progress", "metrics" }
if type(base) ~= "string" then return fail("BAD_REQUEST", "ARGV[2] must be the key base <prefix>:{<machine_id>}") end
for i, name in ipairs(KEY_NAMES) do
  if KEYS[i] ~= base .. ":" .. name then
    return fail("BAD_REQUEST", "KEYS[" .. i .. "] must be the " .. name .. " key of the base given as ARGV[2] (" ..
                #KEY_NAMES .. " keys, protocol " .. PROTOCOL .. ")")
  end
end

-- The keys' protocol is stored in B:status; a script of another protocol refuses to touch them, so
-- an API client with a stale copy of this file gets an error instead of corrupting the machine.
-- Keys written by protocol 1 (a status without `protocol`) are only taken over by enqueue and retire.
do
  local p = redis.call("HMGET", K_STATUS, "protocol", "generation")
  if p[1] and p[1] ~= PROTOCOL then
    return fail("PROTOCOL_MISMATCH", "the machine's keys are at protocol " .. p[1] .. " but this queue.lua speaks protocol " ..
                PROTOCOL .. "; use the queue.lua of the workers' release")
  end
  if not p[1] and p[2] and op ~= "enqueue" and op ~= "retire" then
    return fail("PROTOCOL_MISMATCH", "the machine's keys were written by protocol 1; enqueue a new plan or retire the machine")
  end
end

-- Cuts text to at most n bytes without splitting a UTF-8 character.
local function cut(text, n)
  if #text <= n then return text end
  local s = string.sub(text, 1, n)
  local tail = string.match(s, "[\192-\255][\128-\191]*$")
  if tail then
    local lead = string.byte(tail, 1)
    local need = (lead >= 240 and 4) or (lead >= 224 and 3) or 2
    if #tail < need then s = string.sub(s, 1, #s - #tail) end
  end
  return s
end

local function now_ms()
  local t = redis.call("TIME")
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- A job's record is the fields "<job_id>|<name>" of B:jobs (job ids never contain "|").
local function jget(id, name) return redis.call("HGET", K_JOBS, id .. "|" .. name) end
local function jmget(id, ...)
  local names = { ... }
  for i, name in ipairs(names) do names[i] = id .. "|" .. name end
  return redis.call("HMGET", K_JOBS, unpack(names))
end
local function jset(id, ...)
  local pairs_ = { ... }
  for i = 1, #pairs_, 2 do pairs_[i] = id .. "|" .. pairs_[i] end
  redis.call("HSET", K_JOBS, unpack(pairs_))
end
local function jdel(id, ...)
  local names = { ... }
  for i, name in ipairs(names) do names[i] = id .. "|" .. name end
  redis.call("HDEL", K_JOBS, unpack(names))
end

-- Moves a job between states, keeping the status counters exact.
local function move(id, from, to)
  jset(id, "state", to)
  redis.call("HINCRBY", K_STATUS, from, -1)
  redis.call("HINCRBY", K_STATUS, to, 1)
end

local function wake(n)
  if n <= 0 then return end
  local markers = {}
  for i = 1, math.min(n, WAKE_MARKERS) do markers[i] = "1" end
  redis.call("LPUSH", K_WAKE, unpack(markers))
  redis.call("LTRIM", K_WAKE, 0, WAKE_MARKERS - 1)
  redis.call("EXPIRE", K_WAKE, WAKE_TTL_S)
end

-- A finished plan (ready, failed, cancelled) and its jobs expire after the retention given at enqueue;
-- B:status stays (a few hundred bytes) so the machine's last state remains readable.
local function retain_finished()
  local retention = tonumber(redis.call("HGET", K_STATUS, "retention")) or 604800
  for _, key in ipairs({ K_JOBS, K_FAILURES, K_READY, K_ACTIVE, K_DELAYED }) do
    redis.call("EXPIRE", key, retention)
  end
end

local function add_reason(reason)
  redis.call("RPUSH", K_FAILURES, cjson.encode(reason))
  redis.call("LTRIM", K_FAILURES, -MAX_REASONS, -1)
end

-- The machine flips at most once per generation: to ready when every job succeeded, to failed
-- when the first job is dead. Returns the new state when this call flipped it, else "".
local function flip_if_done(now)
  local s = redis.call("HMGET", K_STATUS, "state", "total", "succeeded")
  if s[1] ~= "pending" and s[1] ~= "running" then return "" end
  if tonumber(s[3]) == tonumber(s[2]) then
    redis.call("HSET", K_STATUS, "state", "ready", "finished_at", now)
    retain_finished()
    return "ready"
  end
  return ""
end

-- A retry that would run in a plan that has already failed is cancelled instead, and so is every
-- job waiting on it, transitively (else they would wait forever and the machine never settle).
local function cancel_retry(id, from, now)
  local message = "the machine failed before this retry"
  move(id, from, "cancelled")
  jset(id, "error_type", "cancelled", "error", message, "finished_at", now)
  jdel(id, "retry_at", "owner", "lease_until")
  local queue, head = { id }, 1
  while queue[head] do
    local cause = queue[head]
    head = head + 1
    for _, dep in ipairs(cjson.decode(jget(cause, "dependents") or "[]")) do
      if jget(dep, "state") == "waiting" then
        move(dep, "waiting", "cancelled")
        jset(dep, "error_type", "cancelled", "error", "dependency " .. cause .. " was cancelled: " .. message, "finished_at", now)
        queue[#queue + 1] = dep
      end
    end
  end
end

local function flip_failed(now)
  local state = redis.call("HGET", K_STATUS, "state")
  if state ~= "pending" and state ~= "running" then return "" end
  redis.call("HSET", K_STATUS, "state", "failed", "finished_at", now)
  -- Retries waiting out their backoff would run jobs of a plan that has already failed.
  for _, id in ipairs(redis.call("ZRANGE", K_DELAYED, 0, -1)) do
    if jget(id, "state") == "delayed" then cancel_retry(id, "delayed", now) end
  end
  redis.call("DEL", K_DELAYED)
  retain_finished()
  return "failed"
end

-- A dead job fails every job that waits on it, transitively, with dependency_failed.
local function fail_dependents(id, now)
  local queue, head = { id }, 1
  while queue[head] do
    local cause = queue[head]
    head = head + 1
    local dependents = cjson.decode(jget(cause, "dependents") or "[]")
    for _, dep in ipairs(dependents) do
      if jget(dep, "state") == "waiting" then
        move(dep, "waiting", "failed")
        local message = "dependency " .. cause .. " failed"
        jset(dep, "error_type", "dependency_failed", "error", message, "finished_at", now)
        add_reason({ job = dep, kind = jget(dep, "kind"), error_type = "dependency_failed",
                     error = message, attempts = 0 })
        queue[#queue + 1] = dep
      end
    end
  end
end

local function make_dead(id, from, error_type, message, now)
  move(id, from, "dead")
  jset(id, "error_type", error_type, "error", message, "finished_at", now)
  jdel(id, "owner", "lease_until")
  local f = jmget(id, "kind", "attempts")
  add_reason({ job = id, kind = f[1], error_type = error_type, error = message, attempts = tonumber(f[2]) })
  fail_dependents(id, now)
  return flip_failed(now)
end

-- Every claim does a bounded amount of upkeep, so no separate sweeper is needed: due retries
-- become ready, and leases whose workers stopped heartbeating are taken back.
local function maintain(now, limit)
  local promoted = 0
  local due = redis.call("ZRANGEBYSCORE", K_DELAYED, "-inf", now, "LIMIT", 0, limit)
  for _, id in ipairs(due) do
    redis.call("ZREM", K_DELAYED, id)
    if jget(id, "state") == "delayed" then
      move(id, "delayed", "ready")
      redis.call("RPUSH", K_READY, id)
      promoted = promoted + 1
    end
  end
  local flipped = ""
  local expired = redis.call("ZRANGEBYSCORE", K_ACTIVE, "-inf", now, "LIMIT", 0, limit)
  for _, id in ipairs(expired) do
    redis.call("ZREM", K_ACTIVE, id)
    local f = jmget(id, "state", "attempts", "max_attempts", "owner")
    if f[1] == "active" then
      redis.call("HINCRBY", K_STATUS, "reclaimed", 1)
      local message = "worker " .. tostring(f[4]) .. " stopped renewing its lease on attempt " ..
                      f[2] .. " of " .. f[3]
      if tonumber(f[2]) >= tonumber(f[3]) then
        local r = make_dead(id, "active", "lease_expired", message, now)
        if r ~= "" then flipped = r end
      elseif redis.call("HGET", K_STATUS, "state") == "failed" then
        cancel_retry(id, "active", now)
      else
        move(id, "active", "ready")
        jset(id, "error_type", "lease_expired", "error", message)
        jdel(id, "owner", "lease_until")
        redis.call("LPUSH", K_READY, id) -- first in line: it was already running
        redis.call("HINCRBY", K_STATUS, "retries", 1)
        promoted = promoted + 1
      end
    end
  end
  return promoted, flipped
end

-- Milliseconds until claim's upkeep has work (the earliest retry due or lease deadline), or -1
-- when nothing is scheduled: an idle worker then waits for a wake marker alone.
local function next_upkeep(now)
  local soonest = -1
  for _, key in ipairs({ K_DELAYED, K_ACTIVE }) do
    local first = redis.call("ZRANGE", key, 0, 0, "WITHSCORES")
    if first[2] then
      local wait = math.max(0, tonumber(first[2]) - now)
      if soonest < 0 or wait < soonest then soonest = wait end
    end
  end
  return soonest
end

-- Checks a worker's (plan, job, token) against the job's current lease.
local function leased(plan, id, token)
  if redis.call("HGET", K_STATUS, "plan_id") ~= plan then return nil, "stale" end
  local f = jmget(id, "state", "token")
  if f[1] == false then return nil, "stale" end
  if f[2] ~= token then return nil, "stale" end
  if f[1] ~= "active" then return nil, f[1] end
  return id, "active"
end

-- Removes workers that stopped heartbeating DEAD_WORKER_MS ago (a few per call), and lets both keys
-- expire when every worker of the machine is gone.
local function bury_dead_workers(now)
  local dead = redis.call("ZRANGEBYSCORE", K_HEARTBEATS, "-inf", now - DEAD_WORKER_MS, "LIMIT", 0, 10)
  if #dead > 0 then
    redis.call("ZREM", K_HEARTBEATS, unpack(dead))
    redis.call("HDEL", K_WORKERS, unpack(dead))
  end
  redis.call("PEXPIRE", K_HEARTBEATS, DEAD_WORKER_MS)
  redis.call("PEXPIRE", K_WORKERS, DEAD_WORKER_MS)
end

---------------------------------------------------------------------------------------------------
-- enqueue <machine_id> <plan_json> <max_payload_bytes> <max_jobs> <replace 0|1> <retention_seconds>
-- Input:  KEYS[1..14]; writes status, ready, active, delayed, failures, wake, jobs, previous, plans.
--         ARGV[3] machine id, ARGV[4] plan JSON (schemas/plan.schema.json), ARGV[5] max payload
--         bytes, ARGV[6] max jobs, ARGV[7] replace, ARGV[8] retention in seconds.
-- Output: { generation, jobs, ready }
--         PLAN_INVALID <sentence> | MACHINE_BUSY <sentence> | BAD_REQUEST <sentence>: nothing written.
---------------------------------------------------------------------------------------------------
local function validate_plan(text, max_payload, max_jobs, machine)
  -- Built here, not at the top: only enqueue needs them, and the top runs on every call.
  local KINDS = { noop = true, sleep = true, download = true, node = true, ["python-deps"] = true,
                  ["install-scripts"] = true, comfyui = true, verify = true, services = true }
  local JOB_FIELDS = { id = true, kind = true, payload = true, depends_on = true, max_attempts = true,
                       backoff_ms = true, backoff_max_ms = true, lease_ms = true, timeout_ms = true,
                       label = true }
  local PLAN_FIELDS = { version = true, plan_id = true, machine_id = true, jobs = true, meta = true }
  local ok, plan = pcall(cjson.decode, text)
  if not ok or type(plan) ~= "table" or plan[1] ~= nil then return nil, "the plan is not a JSON object" end
  for k, _ in pairs(plan) do
    if not PLAN_FIELDS[k] then return nil, "the plan has an unknown field '" .. tostring(k) .. "'" end
  end
  if plan.version ~= 1 then return nil, "the plan's version must be 1" end
  if type(plan.plan_id) ~= "string" or #plan.plan_id < 1 or #plan.plan_id > 100
     or not string.match(plan.plan_id, "^[%w][%w%._%-]*$") then
    return nil, "plan_id must be 1-100 characters of letters, digits, '.', '_' or '-'"
  end
  if plan.machine_id ~= nil and type(plan.machine_id) ~= "string" then
    return nil, "machine_id must be a string"
  end
  if plan.machine_id ~= nil and plan.machine_id ~= machine then
    return nil, "the plan is addressed to machine '" .. cut(plan.machine_id, 100) ..
                "', not to '" .. machine .. "'"
  end
  if plan.meta ~= nil and type(plan.meta) ~= "table" then return nil, "meta must be an object" end
  if type(plan.jobs) ~= "table" or #plan.jobs == 0 then return nil, "the plan has no jobs" end
  if #plan.jobs > max_jobs then
    return nil, "the plan has " .. #plan.jobs .. " jobs, more than the limit of " .. max_jobs
  end
  local numbers = { max_attempts = { 1, 100, 3 }, backoff_ms = { 1, 3600000, 1000 },
                    backoff_max_ms = { 1, 86400000, 300000 }, lease_ms = { 1000, 3600000, 30000 },
                    timeout_ms = { 1000, 604800000, 21600000 } }
  local seen = {}
  for i, job in ipairs(plan.jobs) do
    local where = "job #" .. i
    if type(job) ~= "table" then return nil, where .. " is not an object" end
    if type(job.id) ~= "string" or #job.id < 1 or #job.id > 200
       or not string.match(job.id, "^[%w][%w%._:@%+%-]*$") then
      return nil, where .. " needs an id of 1-200 letters, digits or . _ : @ + -"
    end
    where = "job '" .. job.id .. "'"
    if seen[job.id] then return nil, where .. " appears twice" end
    seen[job.id] = job
    for k, _ in pairs(job) do
      if not JOB_FIELDS[k] then return nil, where .. " has an unknown field '" .. tostring(k) .. "'" end
    end
    if type(job.kind) ~= "string" or not KINDS[job.kind] then
      return nil, where .. " has an unknown kind '" .. tostring(job.kind) .. "'"
    end
    if job.payload == nil then job.payload = {} end
    if type(job.payload) ~= "table" or (next(job.payload) ~= nil and job.payload[1] ~= nil) then
      return nil, where .. " needs a payload that is a JSON object"
    end
    job.payload_json = cjson.encode(job.payload)
    if #job.payload_json > max_payload then
      return nil, where .. " has a payload of " .. #job.payload_json .. " bytes, more than the limit of " ..
                  max_payload
    end
    if job.depends_on == nil then job.depends_on = {} end
    if type(job.depends_on) ~= "table" or (next(job.depends_on) ~= nil and job.depends_on[1] == nil) then
      return nil, where .. " has depends_on that is not a list"
    end
    for field, range in pairs(numbers) do
      local v = job[field]
      if v == nil then
        job[field] = range[3]
      elseif type(v) ~= "number" or v ~= math.floor(v) or v < range[1] or v > range[2] then
        return nil, where .. " has " .. field .. " outside " .. range[1] .. ".." .. range[2]
      end
    end
    if job.label ~= nil and (type(job.label) ~= "string" or #job.label > 200) then
      return nil, where .. " has a label that is not a string of at most 200 characters"
    end
  end
  -- Dependencies must exist, and the graph must be acyclic (Kahn's algorithm).
  local indegree, dependents = {}, {}
  for _, job in ipairs(plan.jobs) do
    indegree[job.id] = 0
    dependents[job.id] = {}
  end
  for _, job in ipairs(plan.jobs) do
    local uniq = {}
    for _, dep in ipairs(job.depends_on) do
      if type(dep) ~= "string" then return nil, "job '" .. job.id .. "' has a dependency that is not a job id" end
      if not seen[dep] then
        return nil, "job '" .. job.id .. "' depends on '" .. dep .. "', which is not in the plan"
      end
      if dep == job.id then return nil, "job '" .. job.id .. "' depends on itself" end
      if not uniq[dep] then
        uniq[dep] = true
        indegree[job.id] = indegree[job.id] + 1
        table.insert(dependents[dep], job.id)
      end
    end
    job.pending = indegree[job.id]
  end
  local remaining, queue, head = #plan.jobs, {}, 1
  local left = {}
  for id, n in pairs(indegree) do
    left[id] = n
    if n == 0 then queue[#queue + 1] = id end
  end
  while queue[head] do
    local id = queue[head]
    head = head + 1
    remaining = remaining - 1
    for _, d in ipairs(dependents[id]) do
      left[d] = left[d] - 1
      if left[d] == 0 then queue[#queue + 1] = d end
    end
  end
  if remaining > 0 then
    local cyclic = {}
    for id, n in pairs(left) do if n > 0 then cyclic[#cyclic + 1] = id end end
    table.sort(cyclic)
    return nil, "the dependencies form a cycle through " .. table.concat(cyclic, ", ", 1, math.min(#cyclic, 5))
  end
  return plan, dependents
end

local function enqueue()
  local machine, text = ARGV[3], ARGV[4]
  local max_payload = math.min(tonumber(ARGV[5]) or 65536, HARD_MAX_PAYLOAD)
  local max_jobs = math.min(tonumber(ARGV[6]) or 50000, HARD_MAX_JOBS)
  local replace, retention = ARGV[7] == "1", math.floor(tonumber(ARGV[8]) or 604800)
  if retention < 1 then retention = 1 end
  if type(machine) ~= "string" or not string.find(base, "{" .. machine .. "}", 1, true) then
    return fail("BAD_REQUEST", "the key base must contain the machine id as a hash tag")
  end
  local plan, dependents = validate_plan(text, max_payload, max_jobs, machine)
  if not plan then return fail("PLAN_INVALID", dependents) end

  local current = redis.call("HMGET", K_STATUS, "plan_id", "state")
  if (current[2] == "pending" or current[2] == "running") and not replace then
    return fail("MACHINE_BUSY", "machine '" .. machine .. "' is still running plan '" .. current[1] ..
                "'; cancel it or enqueue with replace to supersede it")
  end
  local now = now_ms()
  -- B:plans remembers the plan ids of the retention window (score: enqueue time), so a plan id is
  -- refused while its records may still be read.
  redis.call("ZREMRANGEBYSCORE", K_PLANS, "-inf", now - retention * 1000)
  if redis.call("ZSCORE", K_PLANS, plan.plan_id) then
    return fail("PLAN_INVALID", "plan '" .. plan.plan_id .. "' was already enqueued for machine '" .. machine .. "'")
  end

  -- A new generation: the previous plan's records move to B:previous and stay readable for
  -- `retention` seconds (only the latest previous plan is kept).
  if redis.call("EXISTS", K_JOBS) == 1 then
    if current[2] == "pending" or current[2] == "running" or current[2] == "failed" then
      redis.call("HSET", K_JOBS, "|state", "superseded", "|finished_at", now)
    end
    redis.call("RENAME", K_JOBS, K_PREVIOUS)
    redis.call("EXPIRE", K_PREVIOUS, retention)
  end
  redis.call("DEL", K_READY, K_ACTIVE, K_DELAYED, K_FAILURES)
  redis.call("ZADD", K_PLANS, now, plan.plan_id)
  redis.call("EXPIRE", K_PLANS, retention)

  local generation = redis.call("HINCRBY", K_STATUS, "generation", 1)
  local ready, ids, ready_ids = 0, {}, {}
  for _, job in ipairs(plan.jobs) do
    local state = "waiting"
    if job.pending == 0 then state = "ready" end
    jset(job.id, "kind", job.kind, "payload", job.payload_json, "label", job.label or "",
      "depends_on", encode_list(job.depends_on), "dependents", encode_list(dependents[job.id]),
      "pending", job.pending, "state", state, "attempts", 0, "max_attempts", job.max_attempts,
      "backoff_ms", job.backoff_ms, "backoff_max_ms", job.backoff_max_ms, "lease_ms", job.lease_ms,
      "timeout_ms", job.timeout_ms, "created_at", now)
    if state == "ready" then
      ready = ready + 1
      ready_ids[#ready_ids + 1] = job.id
      if #ready_ids == 1000 then
        redis.call("RPUSH", K_READY, unpack(ready_ids))
        ready_ids = {}
      end
    end
    ids[#ids + 1] = job.id
  end
  if #ready_ids > 0 then redis.call("RPUSH", K_READY, unpack(ready_ids)) end
  local meta = "{}"
  if plan.meta ~= nil then meta = cjson.encode(plan.meta) end
  redis.call("HSET", K_JOBS, "|plan_id", plan.plan_id, "|generation", generation, "|jobs", #plan.jobs,
             "|meta", meta, "|enqueued_at", now, "|state", "enqueued", "|ids", table.concat(ids, " "))
  redis.call("HSET", K_STATUS, "plan_id", plan.plan_id, "machine_id", machine, "state", "pending",
             "total", #plan.jobs, "waiting", #plan.jobs - ready, "ready", ready, "active", 0,
             "delayed", 0, "succeeded", 0, "failed", 0, "dead", 0, "cancelled", 0, "retries", 0,
             "reclaimed", 0, "enqueued_at", now, "announced", 0, "protocol", PROTOCOL, "retention", retention)
  redis.call("HDEL", K_STATUS, "started_at", "finished_at", "cancel_reason", "announced_at")
  wake(ready)
  return { generation, #plan.jobs, ready }
end

---------------------------------------------------------------------------------------------------
-- claim <worker_id> <max_jobs> <upkeep_limit>
-- Input:  KEYS[1..14]; reads/writes status, ready, active, delayed, failures, wake, jobs.
-- Output: { flipped, next_upkeep_ms, { job fields... }, ... }; each job is
-- { id, kind, payload, attempt, max_attempts, token, lease_ms, timeout_ms, plan, generation, label }.
-- next_upkeep_ms: when a claim next has upkeep to do (a retry due, a lease deadline), -1 for never:
-- an idle worker waits on B:wake that long, or for a marker alone.
---------------------------------------------------------------------------------------------------
local function claim()
  local worker, count, limit = ARGV[3], tonumber(ARGV[4]) or 1, tonumber(ARGV[5]) or 100
  local s = redis.call("HMGET", K_STATUS, "plan_id", "state", "generation", "fence")
  local plan, state = s[1], s[2]
  local result = { "", -1 }
  if not plan or (state ~= "pending" and state ~= "running" and state ~= "failed") then return result end
  local now = now_ms()
  local promoted, flipped = maintain(now, limit)
  result[1] = flipped
  if promoted > 0 then wake(promoted) end
  count = math.max(0, math.min(count, MAX_BATCH))
  -- Tokens are fence+1, fence+2, ... in claim order, exactly what one HINCRBY per job would give;
  -- the counters and B:active are written once per call.
  local fence, taken, scored = tonumber(s[4]) or 0, 0, {}
  -- Numbers handed to redis.call are formatted with printf each time: format the shared ones once.
  local now_text, deadlines = tostring(now), {}
  while taken < count do
    local ids = redis.call("LPOP", K_READY, count - taken)
    if not ids then break end
    for _, id in ipairs(ids) do
      local f = jmget(id, "state", "kind", "payload", "attempts", "max_attempts", "lease_ms", "timeout_ms", "label")
      if f[1] == "ready" then
        taken = taken + 1
        local token = tostring(fence + taken)
        local attempt = tonumber(f[4]) + 1
        local deadline = deadlines[f[6]]
        if not deadline then
          deadline = tostring(now + tonumber(f[6]))
          deadlines[f[6]] = deadline
        end
        jset(id, "state", "active", "attempts", attempt, "token", token, "owner", worker,
             "lease_until", deadline, "started_at", now_text)
        scored[#scored + 1] = deadline
        scored[#scored + 1] = id
        result[#result + 1] = { id, f[2], f[3], attempt, f[5], token, f[6], f[7], plan, s[3], f[8] }
      end
    end
  end
  if taken > 0 then
    redis.call("HINCRBY", K_STATUS, "fence", taken)
    redis.call("HINCRBY", K_STATUS, "ready", -taken)
    redis.call("HINCRBY", K_STATUS, "active", taken)
    redis.call("ZADD", K_ACTIVE, unpack(scored))
    if state == "pending" then redis.call("HSET", K_STATUS, "state", "running", "started_at", now) end
  end
  result[2] = next_upkeep(now)
  return result
end

---------------------------------------------------------------------------------------------------
-- heartbeat <worker_id> <plan> <job> <token> [<plan> <job> <token> ...]
-- Input:  KEYS[1..14]; writes heartbeats, workers (dead ones removed), active, jobs.
-- Output: { 1 | 0, ... } one per lease: held (renewed) or lost.
-- Renews each lease by its job's lease_ms; returns 1 per job still held, 0 per lease lost.
---------------------------------------------------------------------------------------------------
local function heartbeat()
  local worker = ARGV[3]
  local now = now_ms()
  redis.call("ZADD", K_HEARTBEATS, now, worker)
  bury_dead_workers(now)
  local held = {}
  local i = 4
  while ARGV[i + 2] do
    local id = leased(ARGV[i], ARGV[i + 1], ARGV[i + 2])
    if id and jget(id, "owner") == worker then
      local deadline = now + tonumber(jget(id, "lease_ms"))
      jset(id, "lease_until", deadline)
      redis.call("ZADD", K_ACTIVE, deadline, ARGV[i + 1])
      held[#held + 1] = 1
    else
      held[#held + 1] = 0
    end
    i = i + 3
  end
  return held
end

---------------------------------------------------------------------------------------------------
-- complete <plan> <job> <token> <result_json>
-- Input:  KEYS[1..14]; writes status, ready, active, wake, jobs (and the expiry of a finished plan).
-- Output: { "ok" | "duplicate" | "stale", flipped }.
-- complete_many <plan> <job> <token> <result_json> [<plan> <job> <token> <result_json> ...]
-- The same for up to MAX_BATCH jobs in one call; returns { flipped, { outcome, ... } }.
---------------------------------------------------------------------------------------------------
local function complete_jobs(first)
  local n = 0
  while ARGV[first + 4 * n + 2] do n = n + 1 end
  if n == 0 then return fail("BAD_REQUEST", "complete needs <plan> <job> <token> <result_json>") end
  if n > MAX_BATCH then return fail("BAD_REQUEST", "at most " .. MAX_BATCH .. " jobs may be completed in one call") end
  for k = 0, n - 1 do
    local result = ARGV[first + 4 * k + 3] or "{}"
    if #result > HARD_MAX_PAYLOAD then
      return fail("BAD_REQUEST", "the result of job '" .. ARGV[first + 4 * k + 1] .. "' is too large")
    end
  end
  local current = redis.call("HGET", K_STATUS, "plan_id")
  local now = now_ms()
  local now_text = tostring(now)
  local outcomes, done, unlocked = {}, {}, 0
  for k = 0, n - 1 do
    local at = first + 4 * k
    local plan, id, token, result = ARGV[at], ARGV[at + 1], ARGV[at + 2], ARGV[at + 3] or "{}"
    local outcome = "stale"
    if plan == current then
      local f = jmget(id, "state", "token", "dependents")
      if f[1] and f[2] == token then
        if f[1] == "active" then
          outcome = "ok"
          jset(id, "state", "succeeded", "finished_at", now_text, "result", result)
          jdel(id, "owner", "lease_until")
          done[#done + 1] = id
          if f[3] and f[3] ~= "[]" and f[3] ~= "{}" then
            for _, dep in ipairs(cjson.decode(f[3])) do
              local left = redis.call("HINCRBY", K_JOBS, dep .. "|pending", -1)
              if left == 0 and jget(dep, "state") == "waiting" then
                move(dep, "waiting", "ready")
                redis.call("RPUSH", K_READY, dep)
                unlocked = unlocked + 1
              end
            end
          end
        elseif f[1] == "succeeded" then
          outcome = "duplicate"
        end
      end
    end
    outcomes[k + 1] = outcome
  end
  local flipped = ""
  if #done > 0 then
    redis.call("ZREM", K_ACTIVE, unpack(done))
    redis.call("HINCRBY", K_STATUS, "active", -#done)
    redis.call("HINCRBY", K_STATUS, "succeeded", #done)
    wake(unlocked)
    flipped = flip_if_done(now)
  end
  return outcomes, flipped
end

local function complete()
  local outcomes, flipped = complete_jobs(3)
  if type(outcomes) ~= "table" or outcomes[1] == nil then return outcomes end
  return { outcomes[1], flipped }
end

local function complete_many()
  local outcomes, flipped = complete_jobs(3)
  if type(outcomes) ~= "table" or outcomes[1] == nil then return outcomes end
  return { flipped, outcomes }
end

---------------------------------------------------------------------------------------------------
-- fail <plan> <job> <token> <error_type> <error_message> <retryable 0|1> <jitter 0..1>
-- Input:  KEYS[1..14]; writes status, active, delayed, failures, jobs.
-- Output: { "retry" | "dead" | "stale", flipped, delay_ms }.
---------------------------------------------------------------------------------------------------
local function fail_job()
  local plan, id, token = ARGV[3], ARGV[4], ARGV[5]
  local error_type, message = cut(ARGV[6] or "error", 100), cut(ARGV[7] or "", 4000)
  local retryable, jitter = ARGV[8] == "1", math.min(math.max(tonumber(ARGV[9]) or 0.5, 0), 1)
  if not leased(plan, id, token) then return { "stale", "", 0 } end
  local now = now_ms()
  redis.call("ZREM", K_ACTIVE, id)
  local f = jmget(id, "attempts", "max_attempts", "backoff_ms", "backoff_max_ms")
  local attempts, max_attempts = tonumber(f[1]), tonumber(f[2])
  if retryable and attempts < max_attempts and redis.call("HGET", K_STATUS, "state") == "failed" then
    -- The plan has failed already: no retry, the job and what waits on it are cancelled.
    cancel_retry(id, "active", now)
    return { "dead", "", 0 }
  end
  if retryable and attempts < max_attempts then
    -- Exponential backoff with "equal jitter": half fixed, half random. The random part is the
    -- caller's: before Redis 7 a script's generator is reseeded identically on every call.
    local delay = math.min(tonumber(f[4]), tonumber(f[3]) * 2 ^ (attempts - 1))
    delay = math.floor(delay / 2 + delay / 2 * jitter)
    move(id, "active", "delayed")
    jset(id, "error_type", error_type, "error", message, "retry_at", now + delay)
    jdel(id, "owner", "lease_until")
    redis.call("ZADD", K_DELAYED, now + delay, id)
    redis.call("HINCRBY", K_STATUS, "retries", 1)
    return { "retry", "", delay }
  end
  return { "dead", make_dead(id, "active", error_type, message, now), 0 }
end

---------------------------------------------------------------------------------------------------
-- release <plan> <job> <token>
-- Input:  KEYS[1..14]; writes status, ready, active, wake, jobs.   Output: "released" | "stale".
-- A draining worker hands a job back unfinished; the attempt does not count.
---------------------------------------------------------------------------------------------------
local function release()
  local plan, id, token = ARGV[3], ARGV[4], ARGV[5]
  if not leased(plan, id, token) then return "stale" end
  redis.call("ZREM", K_ACTIVE, id)
  move(id, "active", "ready")
  redis.call("HINCRBY", K_JOBS, id .. "|attempts", -1)
  jdel(id, "owner", "lease_until", "token")
  redis.call("LPUSH", K_READY, id)
  wake(1)
  return "released"
end

---------------------------------------------------------------------------------------------------
-- cancel <plan> <reason>
-- Input:  KEYS[1..14]; writes status, ready, active, delayed, jobs.
-- Output: { "cancelled", n } | { state, 0 } (already ready/cancelled) | BAD_REQUEST (not the current plan).
-- Every job not finished becomes cancelled; running jobs learn it at their next heartbeat.
---------------------------------------------------------------------------------------------------
local function cancel()
  local plan, reason = ARGV[3], cut(ARGV[4] or "cancelled", 1000)
  local s = redis.call("HMGET", K_STATUS, "plan_id", "state")
  if s[1] ~= plan then return fail("BAD_REQUEST", "plan '" .. plan .. "' is not the machine's current plan") end
  if s[2] ~= "pending" and s[2] ~= "running" and s[2] ~= "failed" then return { s[2], 0 } end
  local now, n = now_ms(), 0
  for id in string.gmatch(redis.call("HGET", K_JOBS, "|ids") or "", "%S+") do
    local state = jget(id, "state")
    if state == "waiting" or state == "ready" or state == "active" or state == "delayed" then
      move(id, state, "cancelled")
      jset(id, "error_type", "cancelled", "error", reason, "finished_at", now)
      jdel(id, "owner", "lease_until")
      n = n + 1
    end
  end
  redis.call("DEL", K_READY, K_ACTIVE, K_DELAYED)
  redis.call("HSET", K_STATUS, "cancel_reason", reason)
  if s[2] ~= "failed" then
    redis.call("HSET", K_STATUS, "state", "cancelled", "finished_at", now)
  end
  redis.call("HSET", K_JOBS, "|state", "cancelled")
  retain_finished()
  return { "cancelled", n }
end

---------------------------------------------------------------------------------------------------
-- register <worker_id> <info_json> | unregister <worker_id>
-- Input:  KEYS[1..14]; writes workers, heartbeats.   Output: "registered" | "unregistered".
---------------------------------------------------------------------------------------------------
local function register()
  local worker, info = ARGV[3], ARGV[4]
  if #info > 16384 then return fail("BAD_REQUEST", "worker info is larger than 16 KiB") end
  local now = now_ms()
  redis.call("HSET", K_WORKERS, worker, info)
  redis.call("ZADD", K_HEARTBEATS, now, worker)
  bury_dead_workers(now)
  return "registered"
end

local function unregister()
  redis.call("HDEL", K_WORKERS, ARGV[3])
  redis.call("ZREM", K_HEARTBEATS, ARGV[3])
  return "unregistered"
end

---------------------------------------------------------------------------------------------------
-- announce <claimant> <grace_ms> <takeover_ms>
-- Input:  KEYS[1..14]; reads failures, writes status.
-- Claims the fleet announcement of the current generation's flip (protocols/events.md §5). The
-- status field `announced` is "0" (enqueue), "claimed <at_ms> <claimant>" while someone announces,
-- "1" once announced. A claim older than takeover_ms may be taken over (the claimant died). Callers
-- other than the one that got `flipped` pass grace_ms > 0: they leave the flipper that long first.
-- Returns { "claimed", generation, took_over 0|1, { status hash as field, value, ... }, { reasons } }
--      or { "none" } (no flip: pending, running, cancelled, idle), { "done" } (announced),
--      { "wait" } (within grace_ms of the flip), { "busy" } (another claim, younger than takeover_ms).
---------------------------------------------------------------------------------------------------
local function announce()
  local claimant, grace, takeover = ARGV[3], tonumber(ARGV[4]) or 0, tonumber(ARGV[5]) or 10000
  if not claimant or claimant == "" or #claimant > 200 then
    return fail("BAD_REQUEST", "announce needs a claimant of 1-200 bytes")
  end
  local s = redis.call("HMGET", K_STATUS, "state", "generation", "announced", "finished_at")
  if s[1] ~= "ready" and s[1] ~= "failed" then return { "none" } end
  local announced = s[3] or "0"
  if announced == "1" then return { "done" } end
  local now = now_ms()
  local took_over = 0
  if announced == "0" then
    if now - (tonumber(s[4]) or 0) < grace then return { "wait" } end
  else
    local at = tonumber(string.match(announced, "^claimed (%d+) ")) or 0
    if now - at < takeover then return { "busy" } end
    took_over = 1
  end
  redis.call("HSET", K_STATUS, "announced", "claimed " .. now .. " " .. claimant)
  return { "claimed", s[2], took_over, redis.call("HGETALL", K_STATUS), redis.call("LRANGE", K_FAILURES, 0, -1) }
end

---------------------------------------------------------------------------------------------------
-- announced <claimant> <event_json> <events_maxlen> [<events_max_age_ms>]
-- Input:  KEYS[1..14]; writes status, events.   Output: "announced" | "lost".
-- The claimant has published the announcement fleet-wide: marks the generation announced and
-- appends the machine's own event (machine.ready.complete, or machine.step.failure for step 21) to
-- B:events, both at once, so the event is in the stream exactly once. Returns "announced", or
-- "lost" when the claim is no longer this claimant's (taken over, or a new plan was enqueued).
---------------------------------------------------------------------------------------------------
local function announced()
  local claimant, event, maxlen = ARGV[3], ARGV[4] or "", tonumber(ARGV[5]) or 10000
  local max_age = tonumber(ARGV[6]) or EVENTS_MAX_AGE_MS
  local a = redis.call("HGET", K_STATUS, "announced")
  if not a or string.match(a, "^claimed %d+ (.*)$") ~= claimant then return "lost" end
  local now = now_ms()
  redis.call("HSET", K_STATUS, "announced", "1", "announced_at", now)
  if event ~= "" then
    redis.call("XADD", K_EVENTS, "MAXLEN", "~", maxlen, "*", "event", event)
    redis.call("XTRIM", K_EVENTS, "MINID", "~", math.max(0, now - max_age))
    redis.call("PEXPIRE", K_EVENTS, max_age)
  end
  return "announced"
end

---------------------------------------------------------------------------------------------------
-- retire <force 0|1>
-- Input:  KEYS[1..14] the machine's keys; ARGV[3] force.
-- Output: { "retired", deleted_keys } ; MACHINE_BUSY while a plan is pending or running, unless force.
-- Deletes every key of the machine (its 14 declared keys are all of them). Workers still running for
-- the machine would write B:workers/B:heartbeats again: stop them first.
---------------------------------------------------------------------------------------------------
local function retire()
  local force = ARGV[3] == "1"
  local state = redis.call("HGET", K_STATUS, "state")
  if (state == "pending" or state == "running") and not force then
    return fail("MACHINE_BUSY", "the machine is still " .. state .. "; cancel its plan or retire with force")
  end
  return { "retired", redis.call("DEL", unpack(KEYS)) }
end

local ops = { enqueue = enqueue, retire = retire, claim = claim, heartbeat = heartbeat, complete = complete,
              complete_many = complete_many,
              fail = fail_job, release = release, cancel = cancel, register = register,
              unregister = unregister, announce = announce, announced = announced }
local handler = ops[op]
if not handler then return fail("BAD_REQUEST", "unknown operation '" .. tostring(op) .. "'") end
return handler()
