-- Per-recipient email budget: a sliding-window log for one key (so it is valid on Redis Cluster).
-- KEYS[1]  the sorted set of jobs sent to one recipient: member = job id, score = time in ms
-- ARGV[1]  window in ms      ARGV[2] limit      ARGV[3] the job id
-- Returns {verdict, jobs in the window}: verdict 1 = counted now; 2 = this job was already
-- counted (a retry or a redelivery: allowed without counting it again); 0 = over the budget.
-- The time is Redis's own, so workers whose clocks disagree still share one window. (Redis >= 5
-- replicates a script by its effects, which is what allows writes after TIME.)
-- Only counted jobs are logged, so the set never holds more than `limit` members and a flood
-- of refused jobs costs no memory.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local window = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
local n = redis.call('ZCARD', KEYS[1])
if redis.call('ZSCORE', KEYS[1], ARGV[3]) then
  return {2, n}
end
if n < limit then
  redis.call('ZADD', KEYS[1], now, ARGV[3])
  redis.call('PEXPIRE', KEYS[1], window)
  return {1, n + 1}
end
return {0, n}
