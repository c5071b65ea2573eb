-- provision fleet announcements (protocol 2): machine_ready / machine_failed, one stream entry per
-- machine and generation even when a second announcer takes over from one that died
-- (protocols/events.md §5).
--
-- Call:  EVALSHA <sha> 2 <prefix>:fleet:events {<prefix>:fleet:events}:announced:<machine_id> <op> ...
--
-- KEYS[2] is the fleet stream's index entry for one machine: its hash tag is the stream key's whole
-- name, so both keys are in one cluster slot (another slot than the machine's own keys: announcing
-- is a call of its own, after queue.lua's `announce`). The duplicate check reads that one key: O(1),
-- whatever the length of the stream.
--
-- announce <machine_id> <generation> <plan_id> <index_ttl_s> <maxlen> <max_age_ms> <channel> <message_json>
--          [<field> <value>]...
--   Input:  KEYS[1] the fleet stream, KEYS[2] the machine's index key.
--           generation: decimal; index_ttl_s: how long the index remembers the machine's last
--           announcement (default 604800); maxlen: XADD MAXLEN ~ (default 100000); max_age_ms:
--           entries older than this are trimmed (XTRIM MINID ~, default 604800000, 0 = no age cap).
--   Output: { "added", entry_id }     the entry (announce_id = "<machine_id>:<generation>", plan_id
--                                     and the given fields) was appended and message_json published;
--           { "duplicate", entry_id } this machine's generation and plan were announced already:
--                                     nothing written or published.
-- forget <machine_id>
--   Input:  KEYS[2] the machine's index key.   Output: { "forgotten", 0|1 }.
--   Used when a machine is retired: its generations start again from 1.
--
-- Errors: BAD_REQUEST <sentence> (a missing argument, an index key that is not the machine's).

local stream, index = KEYS[1], KEYS[2]
local op, machine = ARGV[1], ARGV[2]
local function bad(sentence) return redis.error_reply("BAD_REQUEST " .. sentence) end
if type(stream) ~= "string" or type(machine) ~= "string" or machine == "" then
  return bad("fleet.lua needs KEYS[1] (the fleet stream), KEYS[2] (the machine's index key), an op and a machine id")
end
if index ~= "{" .. stream .. "}:announced:" .. machine then
  return bad("KEYS[2] must be {" .. stream .. "}:announced:<machine_id>")
end

if op == "forget" then
  return { "forgotten", redis.call("DEL", index) }
end
if op ~= "announce" then return bad("unknown operation '" .. tostring(op) .. "'") end

local generation, plan = tonumber(ARGV[3]), ARGV[4]
local ttl, maxlen = tonumber(ARGV[5]) or 604800, tonumber(ARGV[6]) or 100000
local max_age, channel, message = tonumber(ARGV[7]) or 604800000, ARGV[8], ARGV[9]
if not generation or not plan or not channel or not message then
  return bad("announce needs <machine_id> <generation> <plan_id> <index_ttl_s> <maxlen> <max_age_ms> <channel> <message_json>")
end
local announce_id = machine .. ":" .. string.format("%d", generation)

-- The index holds "<announce_id> <plan_id> <entry_id>" of the machine's last announcement.
local last = redis.call("GET", index)
if last then
  local id, last_plan, entry = string.match(last, "^(%S+) (%S+) (%S+)$")
  if id == announce_id and last_plan == plan then return { "duplicate", entry } end
end

local fields = { "announce_id", announce_id }
for i = 10, #ARGV - 1, 2 do
  fields[#fields + 1] = ARGV[i]
  fields[#fields + 1] = ARGV[i + 1]
end
local entry = redis.call("XADD", stream, "MAXLEN", "~", maxlen, "*", unpack(fields))
if max_age > 0 then
  local t = redis.call("TIME")
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  redis.call("XTRIM", stream, "MINID", "~", math.max(0, now - max_age))
end
redis.call("SET", index, announce_id .. " " .. plan .. " " .. entry, "EX", math.max(1, math.floor(ttl)))
redis.call("PUBLISH", channel, message)
return { "added", entry }
