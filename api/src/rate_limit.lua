-- Sliding-window log limiter for one key (so it is valid on Redis Cluster).
-- KEYS[1]  the sorted set of accepted request times (ms) for one subject
-- ARGV[1]  window in ms   ARGV[2] limit   ARGV[3] a unique member for this request
-- Returns {allowed (1|0), accepted requests in the window, ms until a slot frees (0 if allowed)}.
-- Only accepted requests are logged, so the set never holds more than `limit` entries and a
-- flood of refused requests costs no memory.
-- The time is Redis's own (TIME), not the caller's: every api replica counts against one
-- clock, so a replica whose clock is off can neither stretch nor shrink anyone's window.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local window = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
local n = redis.call('ZCARD', KEYS[1])
if n < limit then
  redis.call('ZADD', KEYS[1], now, ARGV[3])
  redis.call('PEXPIRE', KEYS[1], window)
  return {1, n + 1, 0}
end
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
local wait = tonumber(oldest[2]) + window - now
if wait < 1 then wait = 1 end
return {0, n, wait}
