-- Sliding-window log limiter for one key (so it is valid on Redis Cluster).
-- KEYS[1]  the sorted set of accepted request times (ms) for one subject
-- ARGV[1]  now in ms      ARGV[2] window in ms
-- ARGV[3]  limit          ARGV[4] a unique member for this request
-- Returns {allowed (1|0), accepted requests in the window, ms until a slot frees (0 if allowed)}.
-- Only accepted requests are logged, so the set never holds more than `limit` entries and a
-- flood of refused requests costs no memory.
local now = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local limit = tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
local n = redis.call('ZCARD', KEYS[1])
if n < limit then
  redis.call('ZADD', KEYS[1], now, ARGV[4])
  redis.call('PEXPIRE', KEYS[1], window)
  return {1, n + 1, 0}
end
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
local wait = tonumber(oldest[2]) + window - now
if wait < 1 then wait = 1 end
return {0, n, wait}
