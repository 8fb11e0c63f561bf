-- The provider answered a throttling code (421, 4.7.x) for mail to one domain: pause the
-- domain for every replica. KEYS[1] the domain's throttle hash (see send_budget.lua).
-- ARGV[1] the first pause in ms   ARGV[2] the most doublings
-- A throttling answer during a pause (a send that was already under way) does not lengthen
-- it. One that comes within a pause's length after the last pause ended doubles it (up to
-- 2^ARGV[2] times the first); after a calm pause's length the state expires and the next
-- throttling starts again from the first pause.
-- Returns {pause ms left, level}.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local paused = tonumber(redis.call('HGET', KEYS[1], 'until') or '0')
local level = tonumber(redis.call('HGET', KEYS[1], 'level') or '0')
if paused > now then
  return {paused - now, level}
end
level = math.min(level + 1, tonumber(ARGV[2]) + 1)
local pause = tonumber(ARGV[1]) * math.pow(2, level - 1)
redis.call('HSET', KEYS[1], 'until', now + pause, 'pause', pause, 'level', level)
redis.call('PEXPIRE', KEYS[1], 2 * pause)
return {pause, level}
