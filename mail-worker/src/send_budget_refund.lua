-- Gives back a send the budget allowed but that did not happen (another budget said "wait"):
-- the grant leaves the log and the job gets a place in its line whose turn is when it comes
-- back (the other budget's turn), so it keeps its priority. Same keys as send_budget.lua.
-- ARGV[1] grant id   ARGV[2] job id   ARGV[3] window ms   ARGV[4] ms until the job comes back,
-- or -1 when it will not (no place)   ARGV[5] 0 = priority line, 1 = bulk line
-- ARGV[6] 1 when the job's requester is capped: its place counts in KEYS[5] as well
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREM', KEYS[1], ARGV[1])
local back = tonumber(ARGV[4])
if back < 0 then
  return 1
end
local keep = math.max(tonumber(ARGV[3]), 60000) + back
local function place(key)
  redis.call('ZADD', key, now + back, ARGV[2])
  if redis.call('PTTL', key) < keep then
    redis.call('PEXPIRE', key, keep)
  end
end
if ARGV[5] == '1' then
  place(KEYS[4])
  if ARGV[6] == '1' then place(KEYS[5]) end
else
  place(KEYS[2])
end
return 1
