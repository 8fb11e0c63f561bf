-- One send budget (the provider's, or one recipient domain's): a sliding-window log of the
-- sends it allowed and a line of the jobs waiting for their turn. The three keys share one
-- hash tag, so the script is valid on Redis Cluster.
-- KEYS[1] log:      sorted set, member = grant id (one per allowed send), score = time in ms
-- KEYS[2] line:     sorted set, member = job id, score = the time (ms) its turn comes
-- KEYS[3] throttle: hash {until, pause, level} while the provider throttles the domain
-- ARGV[1] window ms   ARGV[2] limit (0: no limit, only a throttling pause applies)
-- ARGV[3] job id      ARGV[4] grant id (new for every call)
-- ARGV[5] the job's deadline (unix ms): a turn after it is of no use to the job
-- Returns {verdict, ms, pause ms}: 1 = send now (logged under the grant id); 0 = not its turn,
-- wait ms (it holds its place in the line); 2 = the domain is paused for ms more (of a pause
-- of pause ms); 3 = its turn would come after its deadline: no place is taken (a line longer
-- than a job's life would otherwise fill with places whose holders die before their turn,
-- each pushing the living further back).
-- Time is Redis's own, so replicas whose clocks disagree share one window. (Redis >= 5
-- replicates a script by its effects, which is what allows writes after TIME.)
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local window = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
local job = ARGV[3]
local paused = tonumber(redis.call('HGET', KEYS[3], 'until') or '0')
if paused > now then
  return {2, paused - now, tonumber(redis.call('HGET', KEYS[3], 'pause') or '0')}
end
if limit <= 0 then
  return {1, 0, 0}
end
-- A place in the line kept this long after its turn belongs to a job that went away (dropped
-- as stale, say); it is given up.
local keep = math.max(window, 60000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - keep)
local turn = tonumber(redis.call('ZSCORE', KEYS[2], job) or '-1')
if turn > now then
  return {0, math.ceil(turn - now), 0}
end
local sent = redis.call('ZCARD', KEYS[1])
-- A job without a place goes behind the ones in the line (whose turn has not come, or came
-- moments ago and who are on their way back), so a burst is served in order across replicas.
local ahead = 0
if turn < 0 then
  ahead = redis.call('ZCOUNT', KEYS[2], now - 2000, '+inf')
end
if sent < limit and ahead == 0 then
  redis.call('ZADD', KEYS[1], now, ARGV[4])
  redis.call('PEXPIRE', KEYS[1], window)
  if turn >= 0 then
    redis.call('ZREM', KEYS[2], job)
  end
  return {1, 0, 0}
end
-- Not now. The budget frees a send when the oldest logged one leaves the window.
local at = now + 1
if sent >= limit then
  local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  at = math.max(at, tonumber(oldest[2]) + window)
end
if turn < 0 then
  -- A new place: after the last one, spaced at the budget's rate, so the line comes back
  -- one job at a time instead of all at once.
  local last = redis.call('ZREVRANGE', KEYS[2], 0, 0, 'WITHSCORES')
  if last[2] then
    at = math.max(at, tonumber(last[2]) + window / limit)
  end
end
if at > tonumber(ARGV[5]) then
  if turn >= 0 then
    redis.call('ZREM', KEYS[2], job)
  end
  return {3, 0, 0}
end
-- (A job whose turn came while the budget was still full keeps the head of the line.)
redis.call('ZADD', KEYS[2], at, job)
local latest = redis.call('ZREVRANGE', KEYS[2], 0, 0, 'WITHSCORES')
redis.call('PEXPIRE', KEYS[2], math.ceil(tonumber(latest[2]) - now + keep))
return {0, math.ceil(at - now), 0}
