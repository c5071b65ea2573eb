-- provision fleet announcements: machine_ready / machine_failed, one stream entry per machine and
-- generation even when a second announcer takes over from one that died (protocols/events.md §5).
--
-- Call:  EVALSHA <sha> 1 <prefix>:fleet:events
--                <announce_id> <since_ms> <maxlen> <channel> <message_json> <field> <value> ...
-- announce_id is "<machine_id>:<generation>". Entries from since_ms on are searched for it: when one
-- is there, nothing is written or published. Otherwise the entry (announce_id plus the given
-- fields) is appended with XADD MAXLEN ~ maxlen, and message_json is published on channel.
-- Returns { "added", entry_id } or { "duplicate", entry_id }.
--
-- The script touches one key (the fleet stream), so it runs on any Redis, Cluster included; the
-- machine's own keys are never touched here.

local stream = KEYS[1]
local announce_id, since, maxlen, channel, message = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
if not stream or not announce_id or announce_id == "" or not channel or not message then
  return redis.error_reply("BAD_REQUEST fleet.lua needs the stream key, announce_id, since_ms, maxlen, channel and message")
end

local PAGE = 500
local start = tostring(math.max(0, math.floor(tonumber(since) or 0)))
while true do
  local entries = redis.call("XRANGE", stream, start, "+", "COUNT", PAGE)
  for _, entry in ipairs(entries) do
    local fields = entry[2]
    for i = 1, #fields - 1, 2 do
      if fields[i] == "announce_id" and fields[i + 1] == announce_id then return { "duplicate", entry[1] } end
    end
  end
  if #entries < PAGE then break end
  start = "(" .. entries[#entries][1]
end

local fields = { "announce_id", announce_id }
for i = 6, #ARGV - 1, 2 do
  fields[#fields + 1] = ARGV[i]
  fields[#fields + 1] = ARGV[i + 1]
end
local id = redis.call("XADD", stream, "MAXLEN", "~", tonumber(maxlen) or 100000, "*", unpack(fields))
redis.call("PUBLISH", channel, message)
return { "added", id }
