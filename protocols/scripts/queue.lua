-- provision job queue (protocol 3): every state transition of a machine's plan, in one script.
--
-- Call:  EVALSHA <sha> 15 <B>:status <B>:ready <B>:active <B>:delayed <B>:wake
--                       <B>:failures <B>:workers <B>:heartbeats <B>:events
--                       <B>:jobs <B>:previous <B>:plans <B>:progress <B>:metrics <B>:staging
--                       <op> <B> <op arguments...>
-- where <B> is "<prefix>:{<machine_id>}" (the hash tag keeps one machine's keys in one cluster slot).
--
-- Every key the script touches is one of these 15 declared keys, so a call never leaves its slot and
-- is accepted by Redis Cluster during a slot migration and by proxies that check declared keys. A job's
-- record is one field of B:jobs ("<job_id>": a JSON object of its small fields) beside "<job_id>|payload",
-- "<job_id>|dependents", "<job_id>|depends_on" and "<job_id>|result"; the plan's own fields are "|<field>".
-- A claim or complete reads and writes one record instead of a dozen fields (protocol 2 did).
--
-- No call does work proportional to a whole plan: a plan is enqueued in slices of at most
-- MAX_SLICE_JOBS jobs staged in B:staging, which the last call renames to B:jobs (invisible until then).
--
-- Each operation is documented below in the style of BullMQ's scripts (Input / Output), and in
-- protocols/redis.md. Errors are error replies whose first word is a code (PLAN_INVALID,
-- MACHINE_BUSY, BAD_REQUEST, PROTOCOL_MISMATCH).
--
-- Time comes from the server (TIME), so leases never depend on the clocks of workers.

local PROTOCOL = "3"

local K_STATUS, K_READY, K_ACTIVE, K_DELAYED, K_WAKE = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local K_FAILURES, K_WORKERS, K_HEARTBEATS, K_EVENTS = KEYS[6], KEYS[7], KEYS[8], KEYS[9]
local K_JOBS, K_PREVIOUS, K_PLANS, K_PROGRESS, K_METRICS = KEYS[10], KEYS[11], KEYS[12], KEYS[13], KEYS[14]
local K_STAGING = KEYS[15]

local op = ARGV[1]
local base = ARGV[2]

local WAKE_MARKERS = 64          -- at most this many idle workers are woken at once
local HARD_MAX_PAYLOAD = 1048576 -- bytes of one job's payload, whatever the caller asks
local HARD_MAX_JOBS = 100000
local MAX_META = 65536           -- bytes of the plan's re-encoded meta
local MAX_SLICE_JOBS = 2000      -- jobs in one enqueue or enqueue_slice call: bounds the time a call blocks Redis
local MAX_SLICE_BYTES = 4194304  -- bytes of the JSON text of one enqueue or enqueue_slice call
local STAGING_TTL_MS = 600000    -- an enqueue abandoned between slices leaves nothing after this
local LINK_BUDGET = 4000         -- dependencies on earlier slices linked in one call; more wait for enqueue_link
local MAX_REASONS = 1000
local MAX_BATCH = 1000           -- jobs in one claim or complete_many call
local DEAD_WORKER_MS = 600000    -- a worker silent this long is removed from B:workers / B:heartbeats
local EVENTS_MAX_AGE_MS = 604800000 -- B:events entries older than this are trimmed; an idle stream expires
local WAKE_TTL_S = 3600          -- markers nobody took are not kept forever

-- cjson writes an empty table as {}; lists of ids are written by hand so they stay JSON arrays. Ids
-- need no escaping: they are letters, digits and . _ : @ + - only (checked at enqueue).
local function encode_list(items)
  if #items == 0 then return "[]" end
  return '["' .. table.concat(items, '","') .. '"]'
end

local function fail(code, sentence)
  return redis.error_reply(code .. " " .. sentence)
end

local KEY_NAMES = { "status", "ready", "active", "delayed", "wake", "failures", "workers", "heartbeats", "events",
                    "jobs", "previous", "plans", "progress", "metrics", "staging" }
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
  -- Protocol 2 stored a job as many fields of B:jobs: its keys are taken over like protocol 1's.
  local takeover = op == "enqueue" or op == "enqueue_begin" or op == "enqueue_slice" or op == "enqueue_link" or
                   op == "enqueue_commit" or op == "retire"
  if p[1] and p[1] ~= PROTOCOL and not (p[1] == "2" and takeover) then
    return fail("PROTOCOL_MISMATCH", "the machine's keys are at protocol " .. p[1] .. " but this queue.lua speaks protocol " ..
                PROTOCOL .. "; use the queue.lua of the workers' release")
  end
  if not p[1] and p[2] and not takeover then
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

-- A job's record is the field "<job_id>" of B:jobs: a JSON object of its small fields (job ids never
-- contain "|", so "<job_id>|payload" and the other large fields cannot collide with it).
local function load(id)
  local text = redis.call("HGET", K_JOBS, id)
  if not text then return nil end
  return cjson.decode(text)
end
local function save(id, record) redis.call("HSET", K_JOBS, id, cjson.encode(record)) end
local function dependents_of(id)
  local text = redis.call("HGET", K_JOBS, id .. "|dependents")
  if not text or text == "" then return {} end
  return cjson.decode(text)
end

-- Moves a job between states, keeping the status counters exact (the caller saves the record).
local function move(record, from, to)
  record.state = to
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

-- Every job still waiting on `id`, transitively (breadth first), moves to state `to`; settle(dep,
-- record, cause) fills in why before the record is saved. The one walk over a job's dependents.
local function settle_waiting_dependents(id, to, settle)
  local queue, head = { id }, 1
  while queue[head] do
    local cause = queue[head]
    head = head + 1
    for _, dep in ipairs(dependents_of(cause)) do
      local r = load(dep)
      if r and r.state == "waiting" then
        move(r, "waiting", to)
        settle(dep, r, cause)
        save(dep, r)
        queue[#queue + 1] = dep
      end
    end
  end
end

-- A retry that would run in a plan that has already failed is cancelled instead, and so is every
-- job waiting on it, transitively (else they would wait forever and the machine never settle).
local function cancel_retry(id, record, from, now)
  local message = "the machine failed before this retry"
  move(record, from, "cancelled")
  record.error_type, record.error, record.finished_at = "cancelled", message, now
  record.retry_at, record.owner, record.lease_until = nil, nil, nil
  save(id, record)
  settle_waiting_dependents(id, "cancelled", function(_, r, cause)
    r.error_type, r.error, r.finished_at = "cancelled", "dependency " .. cause .. " was cancelled: " .. message, now
  end)
end

local function flip_failed(now)
  local state = redis.call("HGET", K_STATUS, "state")
  if state ~= "pending" and state ~= "running" then return "" end
  redis.call("HSET", K_STATUS, "state", "failed", "finished_at", now)
  -- Retries waiting out their backoff would run jobs of a plan that has already failed.
  for _, id in ipairs(redis.call("ZRANGE", K_DELAYED, 0, -1)) do
    local r = load(id)
    if r and r.state == "delayed" then cancel_retry(id, r, "delayed", now) end
  end
  redis.call("DEL", K_DELAYED)
  retain_finished()
  return "failed"
end

-- A dead job fails every job that waits on it, transitively, with dependency_failed.
local function fail_dependents(id, now)
  settle_waiting_dependents(id, "failed", function(dep, r, cause)
    local message = "dependency " .. cause .. " failed"
    r.error_type, r.error, r.finished_at = "dependency_failed", message, now
    add_reason({ job = dep, kind = r.kind, error_type = "dependency_failed", error = message, attempts = 0 })
  end)
end

local function make_dead(id, record, from, error_type, message, now)
  move(record, from, "dead")
  record.error_type, record.error, record.finished_at = error_type, message, now
  record.owner, record.lease_until = nil, nil
  save(id, record)
  add_reason({ job = id, kind = record.kind, error_type = error_type, error = message, attempts = record.attempts })
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
    local r = load(id)
    if r and r.state == "delayed" then
      move(r, "delayed", "ready")
      save(id, r)
      redis.call("RPUSH", K_READY, id)
      promoted = promoted + 1
    end
  end
  local flipped = ""
  local expired = redis.call("ZRANGEBYSCORE", K_ACTIVE, "-inf", now, "LIMIT", 0, limit)
  for _, id in ipairs(expired) do
    redis.call("ZREM", K_ACTIVE, id)
    local r = load(id)
    if r and r.state == "active" then
      redis.call("HINCRBY", K_STATUS, "reclaimed", 1)
      local message = "worker " .. tostring(r.owner) .. " stopped renewing its lease on attempt " ..
                      r.attempts .. " of " .. r.max_attempts
      if r.attempts >= r.max_attempts then
        local f = make_dead(id, r, "active", "lease_expired", message, now)
        if f ~= "" then flipped = f end
      elseif redis.call("HGET", K_STATUS, "state") == "failed" then
        cancel_retry(id, r, "active", now)
      else
        move(r, "active", "ready")
        r.error_type, r.error, r.owner, r.lease_until = "lease_expired", message, nil, nil
        save(id, r)
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

-- Checks a worker's (plan, job, token) against the job's current lease: the record when it is
-- active under that token, else nil and why ("stale", or the job's state).
local function leased(plan, id, token)
  if redis.call("HGET", K_STATUS, "plan_id") ~= plan then return nil, "stale" end
  local r = load(id)
  if not r then return nil, "stale" end
  if r.token ~= token then return nil, "stale" end
  if r.state ~= "active" then return nil, r.state end
  return r, "active"
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
-- Input:  KEYS[1..15]; writes status, ready, active, delayed, failures, wake, jobs, previous, plans, staging.
--         ARGV[3] machine id, ARGV[4] plan JSON (schemas/plan.schema.json) of at most MAX_SLICE_JOBS
--         jobs and MAX_SLICE_BYTES bytes, ARGV[5] max payload bytes, ARGV[6] max jobs, ARGV[7]
--         replace, ARGV[8] retention in seconds.
-- Output: { generation, jobs, ready }
--         PLAN_INVALID <sentence> | MACHINE_BUSY <sentence> | BAD_REQUEST <sentence>: nothing written.
--
-- enqueue_begin <machine_id> <upload_id> <plan_head_json> <max_payload_bytes> <max_jobs> <replace> <retention_seconds>
-- enqueue_slice <upload_id> <jobs_json>          (a JSON array of at most MAX_SLICE_JOBS jobs)
-- enqueue_link <upload_id>                        (while a slice answered links left > 0)
-- enqueue_commit <upload_id>
-- A larger plan in slices: begin checks the plan without its jobs (plan_head_json has no "jobs") and
-- starts B:staging (any earlier staging is dropped); each slice checks and stages its jobs; commit
-- makes the staged plan the machine's plan at once, exactly as enqueue would. Until commit nothing is
-- visible; a refused slice drops the staging, an abandoned one expires after STAGING_TTL_MS. A job
-- may depend on jobs of its own slice (any order) or of earlier slices, never of later ones.
-- A slice whose jobs depend on more than LINK_BUDGET jobs of earlier slices leaves the rest of that
-- linking to enqueue_link calls of LINK_BUDGET each, made before the next slice or the commit.
-- Output: begin { "begun", 0 }, slice { "staged", jobs staged so far, links left }, link { "linked",
-- links left }, commit as enqueue.
---------------------------------------------------------------------------------------------------
local KINDS = { noop = true, sleep = true, download = true, node = true, ["python-deps"] = true,
                ["install-scripts"] = true, comfyui = true, verify = true, services = true }

-- The plan's own fields (everything but its jobs); returns the plan table or nil and a sentence.
local function validate_head(plan, machine, sliced)
  local PLAN_FIELDS = { version = true, plan_id = true, machine_id = true, jobs = not sliced, meta = true }
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
  plan.meta_json = "{}"
  if plan.meta ~= nil then plan.meta_json = cjson.encode(plan.meta) end
  if #plan.meta_json > MAX_META then
    return nil, "meta is " .. #plan.meta_json .. " bytes, more than the limit of " .. MAX_META
  end
  return plan
end

-- The checks that refuse an enqueue on this machine now: busy, or the plan id seen before.
local function check_machine(machine, plan_id, replace, retention, now)
  local current = redis.call("HMGET", K_STATUS, "plan_id", "state")
  if (current[2] == "pending" or current[2] == "running") and not replace then
    return fail("MACHINE_BUSY", "machine '" .. machine .. "' is still running plan '" .. current[1] ..
                "'; cancel it or enqueue with replace to supersede it")
  end
  -- B:plans remembers the plan ids of the retention window (score: enqueue time), so a plan id is
  -- refused while its records may still be read.
  redis.call("ZREMRANGEBYSCORE", K_PLANS, "-inf", now - retention * 1000)
  if redis.call("ZSCORE", K_PLANS, plan_id) then
    return fail("PLAN_INVALID", "plan '" .. plan_id .. "' was already enqueued for machine '" .. machine .. "'")
  end
  return nil
end

local function start_staging(upload, plan, machine, max_payload, max_jobs, replace, retention)
  redis.call("UNLINK", K_STAGING)
  redis.call("HSET", K_STAGING, "|upload", upload, "|plan_id", plan.plan_id, "|machine", machine,
             "|meta", plan.meta_json, "|max_payload", max_payload, "|max_jobs", max_jobs,
             "|replace", replace and "1" or "0", "|retention", retention, "|jobs", 0, "|ready_count", 0,
             "|ids", "", "|ready", "")
  redis.call("PEXPIRE", K_STAGING, STAGING_TTL_MS)
end

-- Links jobs to dependencies staged by earlier slices: deps[from..to] are dependency ids, by_dep[dep]
-- the ids depending on it ("a,b"), appended to "<dep>|dependents" (1000 per HMGET/HSET). Returns nil,
-- or the sentence for a dependency that is not staged.
local function link_entries(deps, by_dep, from, to)
  for first = from, to, 1000 do
    local last = math.min(first + 999, to)
    local names = {}
    for i = first, last do names[#names + 1] = deps[i] .. "|dependents" end
    local values = redis.call("HMGET", K_STAGING, unpack(names))
    local pairs_ = {}
    for i = first, last do
      local dep, have, list = deps[i], values[i - first + 1], by_dep[deps[i]]
      if not have then
        return "job '" .. string.match(list, "^[^,]+") .. "' depends on '" .. dep .. "', which is not in this or an" ..
               " earlier slice (a job must be sent after the jobs it depends on)"
      end
      local more = string.gsub(list, ",", '","')
      if have == "" then more = '["' .. more .. '"]' else more = string.sub(have, 1, -2) .. ',"' .. more .. '"]' end
      pairs_[#pairs_ + 1] = names[i - first + 1]
      pairs_[#pairs_ + 1] = more
    end
    redis.call("HSET", K_STAGING, unpack(pairs_))
  end
  return nil
end

-- One chunk of a fan-in job's dependencies (space-separated ids): each must be staged and not the job;
-- each distinct one gets the job appended to its dependents and counts in the job's pending (set in
-- its record with the last chunk). Returns nil or a sentence.
local function link_fan_in(id, text, last_chunk)
  local deps, by_dep, mine, new = {}, {}, '"' .. id .. '"', 0
  for dep in string.gmatch(text, "%S+") do
    if dep == id then return "job '" .. id .. "' depends on itself" end
    if not by_dep[dep] then
      deps[#deps + 1] = dep
      by_dep[dep] = id
    end
  end
  for first = 1, #deps, 1000 do
    local last = math.min(first + 999, #deps)
    local names = {}
    for i = first, last do names[#names + 1] = deps[i] .. "|dependents" end
    local values = redis.call("HMGET", K_STAGING, unpack(names))
    local pairs_ = {}
    for i = first, last do
      local have = values[i - first + 1]
      if not have then
        return "job '" .. id .. "' depends on '" .. deps[i] .. "', which is not in this or an earlier slice" ..
               " (a job must be sent after the jobs it depends on)"
      end
      if not string.find(have, mine, 1, true) then -- a repeat from an earlier chunk is counted once
        new = new + 1
        pairs_[#pairs_ + 1] = names[i - first + 1]
        pairs_[#pairs_ + 1] = have == "" and "[" .. mine .. "]" or string.sub(have, 1, -2) .. "," .. mine .. "]"
      end
    end
    if #pairs_ > 0 then redis.call("HSET", K_STAGING, unpack(pairs_)) end
  end
  local pending = redis.call("HINCRBY", K_STAGING, "|links_pending", new)
  if last_chunk then
    local record = cjson.decode(redis.call("HGET", K_STAGING, id))
    record.pending = pending
    redis.call("HSET", K_STAGING, id, cjson.encode(record))
  end
  return nil
end

-- Checks one slice of jobs and writes them into B:staging. Returns the number staged and the number
-- of links left for enqueue_link, or nil and a sentence (the caller drops the staging). `single`: the slice is the whole plan (sentences of enqueue).
local function stage_jobs(jobs, single)
  local JOB_FIELDS = { id = true, kind = true, payload = true, depends_on = true, max_attempts = true,
                       backoff_ms = true, backoff_max_ms = true, lease_ms = true, timeout_ms = true,
                       label = true }
  local st = redis.call("HMGET", K_STAGING, "|max_payload", "|max_jobs", "|jobs")
  local max_payload, max_jobs, staged = tonumber(st[1]), tonumber(st[2]), tonumber(st[3])
  if type(jobs) ~= "table" or #jobs == 0 then
    if single then return nil, "the plan has no jobs" end
    return nil, "a slice must be a non-empty JSON array of jobs"
  end
  if staged + #jobs > max_jobs then
    return nil, "the plan has " .. (staged + #jobs) .. " jobs" .. (single and "" or " or more") ..
                ", more than the limit of " .. max_jobs
  end
  if #jobs > MAX_SLICE_JOBS then
    return nil, "the plan has " .. #jobs .. " jobs, more than " .. MAX_SLICE_JOBS ..
                " in one call: send it in slices (enqueue_begin, enqueue_slice, enqueue_commit)"
  end
  local numbers = { max_attempts = { 1, 100, 3 }, backoff_ms = { 1, 3600000, 1000 },
                    backoff_max_ms = { 1, 86400000, 300000 }, lease_ms = { 1000, 3600000, 30000 },
                    timeout_ms = { 1000, 604800000, 21600000 } }
  local seen, ids = {}, {}
  for i, job in ipairs(jobs) do
    local where = "job #" .. (staged + i)
    if type(job) ~= "table" then return nil, where .. " is not an object" end
    if type(job.id) ~= "string" or #job.id < 1 or #job.id > 200
       or not string.match(job.id, "^[%w][%w%._:@%+%-]*$") then
      return nil, where .. " needs an id of 1-200 letters, digits or . _ : @ + -"
    end
    where = "job '" .. job.id .. "'"
    if seen[job.id] then return nil, where .. " appears twice" end
    seen[job.id] = job
    ids[i] = job.id
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
  -- Ids of earlier slices: their records are fields of B:staging (one HMGET per 1000 ids).
  local function existing(list)
    local found = {}
    for from = 1, #list, 1000 do
      local names = {}
      for i = from, math.min(from + 999, #list) do names[#names + 1] = list[i] .. "|dependents" end
      local values = redis.call("HMGET", K_STAGING, unpack(names))
      for i, v in ipairs(values) do if v then found[list[from + i - 1]] = v end end
    end
    return found
  end
  if staged > 0 then
    local again = existing(ids)
    for _, id in ipairs(ids) do
      if again[id] then return nil, "job '" .. id .. "' appears twice" end
    end
  end
  -- A job with more than LINK_BUDGET dependencies (a services job waiting on every other job) comes
  -- alone in its slice: its dependencies are all of earlier slices, so it closes no cycle, and
  -- enqueue_link checks and links them LINK_BUDGET at a time (chunks "|links:<n>" of ids).
  if not single and #jobs == 1 and #jobs[1].depends_on > LINK_BUDGET then
    local job = jobs[1]
    for _, dep in ipairs(job.depends_on) do
      if type(dep) ~= "string" then return nil, "job '" .. job.id .. "' has a dependency that is not a job id" end
    end
    local record = { kind = job.kind, label = job.label or "", pending = 0, state = "waiting", attempts = 0,
                     max_attempts = job.max_attempts, backoff_ms = job.backoff_ms, backoff_max_ms = job.backoff_max_ms,
                     lease_ms = job.lease_ms, timeout_ms = job.timeout_ms, created_at = now_ms() }
    local chunks = 0
    for from = 1, #job.depends_on, LINK_BUDGET do
      chunks = chunks + 1
      redis.call("HSET", K_STAGING, "|links:" .. chunks,
                 table.concat(job.depends_on, " ", from, math.min(from + LINK_BUDGET - 1, #job.depends_on)))
    end
    redis.call("HSET", K_STAGING, job.id, cjson.encode(record), job.id .. "|payload", job.payload_json,
               job.id .. "|dependents", "", job.id .. "|depends_on", encode_list(job.depends_on),
               "|links", chunks, "|links_at", 0, "|links_job", job.id, "|links_pending", 0)
    local ids_text = redis.call("HGET", K_STAGING, "|ids")
    redis.call("HSET", K_STAGING, "|ids", ids_text == "" and job.id or ids_text .. " " .. job.id)
    redis.call("PEXPIRE", K_STAGING, STAGING_TTL_MS)
    return redis.call("HINCRBY", K_STAGING, "|jobs", 1), chunks
  elseif not single then
    for _, job in ipairs(jobs) do
      if #job.depends_on > LINK_BUDGET and #jobs > 1 then
        return nil, "job '" .. job.id .. "' depends on more than " .. LINK_BUDGET ..
                    " jobs: send it in a slice of its own"
      end
    end
  end
  -- Dependencies: within the slice (any order) or on an earlier slice's job; the graph of the slice
  -- must be acyclic (Kahn's algorithm), edges to earlier slices cannot close a cycle.
  local indegree, dependents, outside, outside_list, edges = {}, {}, {}, {}, 0
  for _, job in ipairs(jobs) do
    indegree[job.id] = 0
    dependents[job.id] = {}
  end
  for _, job in ipairs(jobs) do
    local uniq, pending = {}, 0
    for _, dep in ipairs(job.depends_on) do
      if type(dep) ~= "string" then return nil, "job '" .. job.id .. "' has a dependency that is not a job id" end
      if dep == job.id then return nil, "job '" .. job.id .. "' depends on itself" end
      if not uniq[dep] then
        uniq[dep] = true
        pending = pending + 1
        if seen[dep] then
          indegree[job.id] = indegree[job.id] + 1
          table.insert(dependents[dep], job.id)
        else
          -- A job of an earlier slice: "a,b" are the ids of this slice depending on it.
          local have = outside[dep]
          if have then
            outside[dep] = have .. "," .. job.id
          else
            outside[dep] = job.id
            outside_list[#outside_list + 1] = dep
          end
          edges = edges + 1
        end
      end
    end
    job.pending = pending
  end
  if single then
    -- The staging is empty: a dependency outside the slice is not in the plan.
    for _, job in ipairs(jobs) do
      for _, dep in ipairs(job.depends_on) do
        if not seen[dep] then return nil, "job '" .. job.id .. "' depends on '" .. dep .. "', which is not in the plan" end
      end
    end
  end
  local remaining, queue, head, left = #jobs, {}, 1, {}
  for _, id in ipairs(ids) do
    left[id] = indegree[id]
    if indegree[id] == 0 then queue[#queue + 1] = id end
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

  -- Accepted: append this slice's jobs to the dependents lists of earlier slices' jobs, now when
  -- they are few, else in bounded steps (enqueue_link) before the next slice ...
  local deferred = 0
  if edges <= LINK_BUDGET then
    local why = link_entries(outside_list, outside, 1, #outside_list)
    if why then return nil, why end
  else
    -- Chunks "|links:<n>" of LINK_BUDGET "dep=a,b" entries, one per enqueue_link call ('=' and ','
    -- are not in ids).
    local chunk = {}
    for i, dep in ipairs(outside_list) do
      chunk[#chunk + 1] = dep .. "=" .. outside[dep]
      if #chunk == LINK_BUDGET or i == #outside_list then
        deferred = deferred + 1
        redis.call("HSET", K_STAGING, "|links:" .. deferred, table.concat(chunk, " "))
        chunk = {}
      end
    end
    redis.call("HSET", K_STAGING, "|links", deferred, "|links_at", 0)
  end
  -- ... and write the slice's records, 100 jobs per HSET.
  local now = now_ms()
  local ready_ids, batch = {}, {}
  for i, job in ipairs(jobs) do
    local state = "waiting"
    if job.pending == 0 then
      state = "ready"
      ready_ids[#ready_ids + 1] = job.id
    end
    local record = { kind = job.kind, label = job.label or "", pending = job.pending, state = state,
                     attempts = 0, max_attempts = job.max_attempts, backoff_ms = job.backoff_ms,
                     backoff_max_ms = job.backoff_max_ms, lease_ms = job.lease_ms, timeout_ms = job.timeout_ms,
                     created_at = now }
    batch[#batch + 1] = job.id
    batch[#batch + 1] = cjson.encode(record)
    batch[#batch + 1] = job.id .. "|payload"
    batch[#batch + 1] = job.payload_json
    batch[#batch + 1] = job.id .. "|dependents"
    batch[#batch + 1] = #dependents[job.id] > 0 and encode_list(dependents[job.id]) or ""
    if #job.depends_on > 0 then
      batch[#batch + 1] = job.id .. "|depends_on"
      batch[#batch + 1] = encode_list(job.depends_on)
    end
    if i % 100 == 0 or i == #jobs then
      redis.call("HSET", K_STAGING, unpack(batch))
      batch = {}
    end
  end
  local lists = redis.call("HMGET", K_STAGING, "|ids", "|ready")
  local ids_text, ready_text = table.concat(ids, " "), table.concat(ready_ids, " ")
  if lists[1] ~= "" then ids_text = lists[1] .. " " .. ids_text end
  if lists[2] ~= "" and ready_text ~= "" then ready_text = lists[2] .. " " .. ready_text
  elseif ready_text == "" then ready_text = lists[2] end
  redis.call("HSET", K_STAGING, "|ids", ids_text, "|ready", ready_text)
  redis.call("HINCRBY", K_STAGING, "|ready_count", #ready_ids)
  redis.call("PEXPIRE", K_STAGING, STAGING_TTL_MS)
  return redis.call("HINCRBY", K_STAGING, "|jobs", #jobs), deferred
end

-- Makes the staged plan the machine's plan: the only step the machine's readers and workers see.
local function commit_staging(upload)
  local st = redis.call("HMGET", K_STAGING, "|upload", "|plan_id", "|machine", "|replace", "|retention", "|jobs",
                        "|ready_count")
  if st[1] ~= upload then
    return fail("BAD_REQUEST", "enqueue '" .. tostring(upload) .. "' is not in progress (it expired, was committed," ..
                " or another enqueue replaced it)")
  end
  local plan_id, machine, replace, retention = st[2], st[3], st[4] == "1", tonumber(st[5])
  local total, ready = tonumber(st[6]), tonumber(st[7])
  if total == 0 then
    redis.call("UNLINK", K_STAGING)
    return fail("PLAN_INVALID", "the plan has no jobs")
  end
  local now = now_ms()
  local refused = check_machine(machine, plan_id, replace, retention, now)
  if refused then
    redis.call("UNLINK", K_STAGING)
    return refused
  end
  -- A new generation: the previous plan's records move to B:previous and stay readable for
  -- `retention` seconds (only the latest previous plan is kept). UNLINK frees large values off the
  -- main thread.
  local current = redis.call("HGET", K_STATUS, "state")
  if redis.call("EXISTS", K_JOBS) == 1 then
    redis.call("UNLINK", K_PREVIOUS)
    if current == "pending" or current == "running" or current == "failed" then
      redis.call("HSET", K_JOBS, "|state", "superseded", "|finished_at", now)
    end
    redis.call("RENAME", K_JOBS, K_PREVIOUS)
    redis.call("EXPIRE", K_PREVIOUS, retention)
  end
  redis.call("UNLINK", K_READY, K_ACTIVE, K_DELAYED, K_FAILURES)
  redis.call("ZADD", K_PLANS, now, plan_id)
  redis.call("EXPIRE", K_PLANS, retention)

  local generation = redis.call("HINCRBY", K_STATUS, "generation", 1)
  local ready_text = redis.call("HGET", K_STAGING, "|ready")
  redis.call("HDEL", K_STAGING, "|upload", "|machine", "|max_payload", "|max_jobs", "|replace", "|retention",
             "|ready_count", "|ready")
  redis.call("HSET", K_STAGING, "|generation", generation, "|enqueued_at", now, "|state", "enqueued")
  redis.call("PERSIST", K_STAGING)
  redis.call("RENAME", K_STAGING, K_JOBS)
  local batch = {}
  for id in string.gmatch(ready_text, "%S+") do
    batch[#batch + 1] = id
    if #batch == 1000 then
      redis.call("RPUSH", K_READY, unpack(batch))
      batch = {}
    end
  end
  if #batch > 0 then redis.call("RPUSH", K_READY, unpack(batch)) end
  redis.call("HSET", K_STATUS, "plan_id", plan_id, "machine_id", machine, "state", "pending",
             "total", total, "waiting", total - ready, "ready", ready, "active", 0,
             "delayed", 0, "succeeded", 0, "failed", 0, "dead", 0, "cancelled", 0, "retries", 0,
             "reclaimed", 0, "enqueued_at", now, "announced", 0, "protocol", PROTOCOL, "retention", retention)
  redis.call("HDEL", K_STATUS, "started_at", "finished_at", "cancel_reason", "cancel_cursor", "announced_at")
  wake(ready)
  return { generation, total, ready }
end

local function enqueue_arguments(first)
  local max_payload = math.min(tonumber(ARGV[first]) or 65536, HARD_MAX_PAYLOAD)
  local max_jobs = math.min(tonumber(ARGV[first + 1]) or 50000, HARD_MAX_JOBS)
  local replace, retention = ARGV[first + 2] == "1", math.floor(tonumber(ARGV[first + 3]) or 604800)
  if retention < 1 then retention = 1 end
  return max_payload, max_jobs, replace, retention
end

local function check_machine_tag(machine)
  if type(machine) ~= "string" or not string.find(base, "{" .. machine .. "}", 1, true) then
    return fail("BAD_REQUEST", "the key base must contain the machine id as a hash tag")
  end
end

local function decode_object(text, what)
  if type(text) ~= "string" then return nil, what .. " is missing" end
  if #text > MAX_SLICE_BYTES then
    return nil, what .. " is " .. #text .. " bytes, more than " .. MAX_SLICE_BYTES ..
                " in one call: send it in slices (enqueue_begin, enqueue_slice, enqueue_commit)"
  end
  local ok, value = pcall(cjson.decode, text)
  if not ok or type(value) ~= "table" then return nil, nil end
  return value
end

local function enqueue()
  local machine, text = ARGV[3], ARGV[4]
  local max_payload, max_jobs, replace, retention = enqueue_arguments(5)
  local bad = check_machine_tag(machine)
  if bad then return bad end
  local plan, why = decode_object(text, "the plan")
  if not plan or plan[1] ~= nil then return fail("PLAN_INVALID", why or "the plan is not a JSON object") end
  plan, why = validate_head(plan, machine, false)
  if not plan then return fail("PLAN_INVALID", why) end
  if type(plan.jobs) ~= "table" or #plan.jobs == 0 then return fail("PLAN_INVALID", "the plan has no jobs") end
  start_staging("-", plan, machine, max_payload, max_jobs, replace, retention)
  local staged
  staged, why = stage_jobs(plan.jobs, true)
  if not staged then
    redis.call("UNLINK", K_STAGING)
    return fail("PLAN_INVALID", why)
  end
  return commit_staging("-")
end

local function valid_upload(upload)
  return type(upload) == "string" and #upload <= 64 and string.match(upload, "^[%w][%w%._%-]*$") ~= nil
end

local function enqueue_begin()
  local machine, upload, text = ARGV[3], ARGV[4], ARGV[5]
  local max_payload, max_jobs, replace, retention = enqueue_arguments(6)
  local bad = check_machine_tag(machine)
  if bad then return bad end
  if not valid_upload(upload) then
    return fail("BAD_REQUEST", "the upload id must be 1-64 letters, digits, '.', '_' or '-'")
  end
  local plan, why = decode_object(text, "the plan")
  if not plan or plan[1] ~= nil then return fail("PLAN_INVALID", why or "the plan is not a JSON object") end
  plan, why = validate_head(plan, machine, true)
  if not plan then return fail("PLAN_INVALID", why) end
  local refused = check_machine(machine, plan.plan_id, replace, retention, now_ms())
  if refused then return refused end
  start_staging(upload, plan, machine, max_payload, max_jobs, replace, retention)
  return { "begun", 0 }
end

local function enqueue_slice()
  local upload, text = ARGV[3], ARGV[4]
  if not valid_upload(upload) or redis.call("HGET", K_STAGING, "|upload") ~= upload then
    return fail("BAD_REQUEST", "enqueue '" .. tostring(upload) .. "' is not in progress (it expired, was committed," ..
                " or another enqueue replaced it)")
  end
  if redis.call("HEXISTS", K_STAGING, "|links") == 1 then
    return fail("BAD_REQUEST", "enqueue '" .. upload .. "' has dependencies left to link: call enqueue_link until it answers 0")
  end
  local jobs, why = decode_object(text, "the slice")
  if not jobs or (next(jobs) ~= nil and jobs[1] == nil) then
    redis.call("UNLINK", K_STAGING)
    return fail("PLAN_INVALID", why or "a slice must be a non-empty JSON array of jobs")
  end
  local staged, left = stage_jobs(jobs, false)
  if not staged then
    redis.call("UNLINK", K_STAGING)
    return fail("PLAN_INVALID", left)
  end
  return { "staged", staged, left }
end

-- Links up to LINK_BUDGET of the dependencies a slice left (a job depending on many jobs of earlier
-- slices, such as a services job depending on all of them). Output: { "linked", links left }.
local function enqueue_link()
  local upload = ARGV[3]
  if not valid_upload(upload) or redis.call("HGET", K_STAGING, "|upload") ~= upload then
    return fail("BAD_REQUEST", "enqueue '" .. tostring(upload) .. "' is not in progress (it expired, was committed," ..
                " or another enqueue replaced it)")
  end
  local st = redis.call("HMGET", K_STAGING, "|links", "|links_at")
  if not st[1] then return { "linked", 0 } end
  local chunks, at = tonumber(st[1]), tonumber(st[2]) + 1
  local text = redis.call("HGET", K_STAGING, "|links:" .. at) or ""
  local fan_in = redis.call("HGET", K_STAGING, "|links_job")
  local why
  if fan_in then
    why = link_fan_in(fan_in, text, at == chunks)
  else
    local deps, by_dep = {}, {}
    for dep, list in string.gmatch(text, "([^ =]+)=(%S+)") do
      deps[#deps + 1] = dep
      by_dep[dep] = list
    end
    why = link_entries(deps, by_dep, 1, #deps)
  end
  if why then
    redis.call("UNLINK", K_STAGING)
    return fail("PLAN_INVALID", why)
  end
  redis.call("HDEL", K_STAGING, "|links:" .. at)
  redis.call("PEXPIRE", K_STAGING, STAGING_TTL_MS)
  if at >= chunks then
    redis.call("HDEL", K_STAGING, "|links", "|links_at", "|links_job", "|links_pending")
    return { "linked", 0 }
  end
  redis.call("HSET", K_STAGING, "|links_at", at)
  return { "linked", chunks - at }
end

local function enqueue_commit()
  local upload = ARGV[3]
  if not valid_upload(upload) then
    return fail("BAD_REQUEST", "the upload id must be 1-64 letters, digits, '.', '_' or '-'")
  end
  if redis.call("HEXISTS", K_STAGING, "|links") == 1 then
    return fail("BAD_REQUEST", "enqueue '" .. upload .. "' has dependencies left to link: call enqueue_link until it answers 0")
  end
  return commit_staging(upload)
end

---------------------------------------------------------------------------------------------------
-- claim <worker_id> <max_jobs> <upkeep_limit>
-- Input:  KEYS[1..15]; reads/writes status, ready, active, delayed, failures, wake, jobs.
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
  local deadlines = {}
  while taken < count do
    local ids = redis.call("LPOP", K_READY, count - taken)
    if not ids then break end
    for _, id in ipairs(ids) do
      local f = redis.call("HMGET", K_JOBS, id, id .. "|payload")
      local r = f[1] and cjson.decode(f[1])
      if r and r.state == "ready" then
        taken = taken + 1
        local token = tostring(fence + taken)
        r.attempts = r.attempts + 1
        local deadline = deadlines[r.lease_ms]
        if not deadline then
          deadline = now + r.lease_ms
          deadlines[r.lease_ms] = deadline
        end
        r.state, r.token, r.owner, r.lease_until, r.started_at = "active", token, worker, deadline, now
        save(id, r)
        scored[#scored + 1] = deadline
        scored[#scored + 1] = id
        result[#result + 1] = { id, r.kind, f[2] or "{}", r.attempts, tostring(r.max_attempts), token,
                                tostring(r.lease_ms), tostring(r.timeout_ms), plan, s[3], r.label or "" }
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
-- Input:  KEYS[1..15]; writes heartbeats, workers (dead ones removed), active, jobs.
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
    local r = leased(ARGV[i], ARGV[i + 1], ARGV[i + 2])
    if r and r.owner == worker then
      local deadline = now + r.lease_ms
      r.lease_until = deadline
      save(ARGV[i + 1], r)
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
-- Input:  KEYS[1..15]; writes status, ready, active, wake, jobs (and the expiry of a finished plan).
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
  local outcomes, done, unlocked = {}, {}, 0
  for k = 0, n - 1 do
    local at = first + 4 * k
    local plan, id, token, result = ARGV[at], ARGV[at + 1], ARGV[at + 2], ARGV[at + 3] or "{}"
    local outcome = "stale"
    if plan == current then
      local f = redis.call("HMGET", K_JOBS, id, id .. "|dependents")
      local r = f[1] and cjson.decode(f[1])
      if r and r.token == token then
        if r.state == "active" then
          outcome = "ok"
          r.state, r.finished_at, r.owner, r.lease_until = "succeeded", now, nil, nil
          redis.call("HSET", K_JOBS, id, cjson.encode(r), id .. "|result", result)
          done[#done + 1] = id
          if f[2] and f[2] ~= "" then
            for _, dep in ipairs(cjson.decode(f[2])) do
              local d = load(dep)
              if d then
                d.pending = d.pending - 1
                if d.pending == 0 and d.state == "waiting" then
                  move(d, "waiting", "ready")
                  redis.call("RPUSH", K_READY, dep)
                  unlocked = unlocked + 1
                end
                save(dep, d)
              end
            end
          end
        elseif r.state == "succeeded" then
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
-- Input:  KEYS[1..15]; writes status, active, delayed, failures, jobs.
-- Output: { "retry" | "dead" | "stale", flipped, delay_ms }.
---------------------------------------------------------------------------------------------------
local function fail_job()
  local plan, id, token = ARGV[3], ARGV[4], ARGV[5]
  local error_type, message = cut(ARGV[6] or "error", 100), cut(ARGV[7] or "", 4000)
  local retryable, jitter = ARGV[8] == "1", math.min(math.max(tonumber(ARGV[9]) or 0.5, 0), 1)
  local r = leased(plan, id, token)
  if not r then return { "stale", "", 0 } end
  local now = now_ms()
  redis.call("ZREM", K_ACTIVE, id)
  if retryable and r.attempts < r.max_attempts and redis.call("HGET", K_STATUS, "state") == "failed" then
    -- The plan has failed already: no retry, the job and what waits on it are cancelled.
    cancel_retry(id, r, "active", now)
    return { "dead", "", 0 }
  end
  if retryable and r.attempts < r.max_attempts then
    -- Exponential backoff with "equal jitter": half fixed, half random. The random part is the
    -- caller's: before Redis 7 a script's generator is reseeded identically on every call.
    local delay = math.min(r.backoff_max_ms, r.backoff_ms * 2 ^ (r.attempts - 1))
    delay = math.floor(delay / 2 + delay / 2 * jitter)
    move(r, "active", "delayed")
    r.error_type, r.error, r.retry_at, r.owner, r.lease_until = error_type, message, now + delay, nil, nil
    save(id, r)
    redis.call("ZADD", K_DELAYED, now + delay, id)
    redis.call("HINCRBY", K_STATUS, "retries", 1)
    return { "retry", "", delay }
  end
  return { "dead", make_dead(id, r, "active", error_type, message, now), 0 }
end

---------------------------------------------------------------------------------------------------
-- release <plan> <job> <token>
-- Input:  KEYS[1..15]; writes status, ready, active, wake, jobs.   Output: "released" | "stale".
-- A draining worker hands a job back unfinished; the attempt does not count.
---------------------------------------------------------------------------------------------------
local function release()
  local plan, id, token = ARGV[3], ARGV[4], ARGV[5]
  local r = leased(plan, id, token)
  if not r then return "stale" end
  redis.call("ZREM", K_ACTIVE, id)
  move(r, "active", "ready")
  r.attempts, r.owner, r.lease_until, r.token = r.attempts - 1, nil, nil, nil
  save(id, r)
  redis.call("LPUSH", K_READY, id)
  wake(1)
  return "released"
end

---------------------------------------------------------------------------------------------------
-- cancel <plan> <reason> [<limit>]
-- Input:  KEYS[1..15]; writes status, ready, active, delayed, jobs.
-- Output: { "cancelled", n, more } | { state, 0, 0 } (already ready/cancelled) | BAD_REQUEST (not the current plan).
-- Every job not finished becomes cancelled; running jobs learn it at their next heartbeat.
-- With a limit the records are cancelled in slices, so that no call holds Redis for long (50,000
-- jobs in one call took 0.6 s): the first call cancels the active and delayed jobs and flips the
-- plan (nothing can be claimed after it), then up to <limit> records per call in plan order;
-- more = 1 until the last slice. Calling cancel again goes on where an interrupted one stopped.
---------------------------------------------------------------------------------------------------
local function cancel_record(id, r, reason, now)
  local state = r and r.state
  if state == "waiting" or state == "ready" or state == "active" or state == "delayed" then
    move(r, state, "cancelled")
    r.error_type, r.error, r.finished_at, r.owner, r.lease_until = "cancelled", reason, now, nil, nil
    save(id, r)
    return 1
  end
  return 0
end

local function cancel()
  local plan, reason = ARGV[3], cut(ARGV[4] or "cancelled", 1000)
  local limit = tonumber(ARGV[5] or "")
  if limit and limit < 1 then return fail("BAD_REQUEST", "cancel's slice limit must be at least 1") end
  local s = redis.call("HMGET", K_STATUS, "plan_id", "state", "cancel_cursor", "cancel_reason")
  if s[1] ~= plan then return fail("BAD_REQUEST", "plan '" .. plan .. "' is not the machine's current plan") end
  local now, n = now_ms(), 0
  local cursor = tonumber(s[3] or "")
  if cursor then
    reason = s[4] or reason
  elseif s[2] == "pending" or s[2] == "running" or s[2] == "failed" then
    for _, set in ipairs({ K_ACTIVE, K_DELAYED }) do
      for _, id in ipairs(redis.call("ZRANGE", set, 0, -1)) do n = n + cancel_record(id, load(id), reason, now) end
    end
    redis.call("DEL", K_READY, K_ACTIVE, K_DELAYED)
    redis.call("HSET", K_STATUS, "cancel_reason", reason)
    if s[2] ~= "failed" then
      redis.call("HSET", K_STATUS, "state", "cancelled", "finished_at", now)
    end
    redis.call("HSET", K_JOBS, "|state", "cancelled")
    retain_finished()
    cursor = 1
  else
    return { s[2], 0, 0 }
  end
  -- The rest in plan order, from a byte offset into the id list, up to limit records.
  local ids = redis.call("HGET", K_JOBS, "|ids") or ""
  local seen = 0
  while not limit or seen < limit do
    local from, to = string.find(ids, "%S+", cursor)
    if not from then cursor = nil; break end
    local id = ids:sub(from, to)
    n = n + cancel_record(id, load(id), reason, now)
    cursor, seen = to + 1, seen + 1
  end
  if cursor and string.find(ids, "%S", cursor) then
    redis.call("HSET", K_STATUS, "cancel_cursor", cursor)
    return { "cancelled", n, 1 }
  end
  redis.call("HDEL", K_STATUS, "cancel_cursor")
  return { "cancelled", n, 0 }
end

---------------------------------------------------------------------------------------------------
-- register <worker_id> <info_json> | unregister <worker_id>
-- Input:  KEYS[1..15]; writes workers, heartbeats.   Output: "registered" | "unregistered".
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
-- Input:  KEYS[1..15]; reads failures, writes status.
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
-- Input:  KEYS[1..15]; writes status, events.   Output: "announced" | "lost".
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
-- Input:  KEYS[1..15] the machine's keys; ARGV[3] force.
-- Output: { "retired", deleted_keys } ; MACHINE_BUSY while a plan is pending or running, unless force.
-- Deletes every key of the machine (its 15 declared keys are all of them). Workers still running for
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

local ops = { enqueue = enqueue, enqueue_begin = enqueue_begin, enqueue_slice = enqueue_slice,
              enqueue_link = enqueue_link, enqueue_commit = enqueue_commit, retire = retire, claim = claim, heartbeat = heartbeat, complete = complete,
              complete_many = complete_many,
              fail = fail_job, release = release, cancel = cancel, register = register,
              unregister = unregister, announce = announce, announced = announced }
local handler = ops[op]
if not handler then return fail("BAD_REQUEST", "unknown operation '" .. tostring(op) .. "'") end
return handler()
