-- Gives back a send the budget allowed but that did not happen (another budget said "wait"):
-- the grant leaves the log and the job gets a place whose turn is now, so it keeps its
-- priority when it comes back. Same keys as send_budget.lua.
-- ARGV[1] grant id   ARGV[2] job id   ARGV[3] window ms
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('ZADD', KEYS[2], now, ARGV[2])
local keep = math.max(tonumber(ARGV[3]), 60000)
if redis.call('PTTL', KEYS[2]) < keep then
  redis.call('PEXPIRE', KEYS[2], keep)
end
return 1
