-- One send budget (the provider's, or one recipient domain's): a sliding-window log of the
-- sends it allowed and two lines of jobs waiting for their turn: the priority line (reset
-- emails and password-changed notices, which a person is waiting for) and the bulk line (the
-- kinds a stranger can cause: verification emails, account-exists and no-account notices).
-- Every key shares one hash tag, so the script is valid on Redis Cluster.
-- KEYS[1] log:      sorted set, member = grant id (one per allowed send), score = time in ms
-- KEYS[2] line:     sorted set of the priority line, member = job id, score = its turn (ms)
-- KEYS[3] throttle: hash {until, pause, level} while the provider throttles the domain
-- KEYS[4] bulk:     sorted set of the bulk line, as KEYS[2]
-- KEYS[5] held:     sorted set of the bulk places held by the job's requester (job id -> turn)
-- ARGV[1] window ms   ARGV[2] limit (0: no limit, only a throttling pause applies)
-- ARGV[3] job id      ARGV[4] grant id (new for every call)
-- ARGV[5] the job's deadline (unix ms): a turn after it is of no use to the job
-- ARGV[6] 0 = priority, 1 = bulk
-- ARGV[7] places one requester may hold in the bulk line (0: no cap, or no requester known)
-- Returns {verdict, ms, pause ms}: 1 = send now (logged under the grant id); 0 = not its turn,
-- wait ms (it holds its place in its line, unless its requester holds its share of the line:
-- then it comes back after a window without a place); 2 = the domain is paused for ms more
-- (of a pause of pause ms); 3 = its turn would come after its deadline: no place is taken (a
-- line longer than a job's life would otherwise fill with places whose holders die before
-- their turn, each pushing the living further back).
-- Time is Redis's own, so replicas whose clocks disagree share one window. (Redis >= 5
-- replicates a script by its effects, which is what allows writes after TIME.)
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local window = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
local job = ARGV[3]
local deadline = tonumber(ARGV[5])
local bulk = ARGV[6] == '1'
local cap = tonumber(ARGV[7])
local paused = tonumber(redis.call('HGET', KEYS[3], 'until') or '0')
if paused > now then
  return {2, paused - now, tonumber(redis.call('HGET', KEYS[3], 'pause') or '0')}
end
if limit <= 0 then
  return {1, 0, 0}
end
local line = KEYS[2]
if bulk then line = KEYS[4] end
-- A place in a line kept this long after its turn belongs to a job that went away (dropped
-- as stale, say); it is given up.
local keep = math.max(window, 60000)
local spacing = window / limit
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - keep)
redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', now - keep)
if bulk and cap > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[5], '-inf', now - keep)
end
local function leave()
  redis.call('ZREM', line, job)
  if bulk and cap > 0 then redis.call('ZREM', KEYS[5], job) end
end
local turn = tonumber(redis.call('ZSCORE', line, job) or '-1')
if turn > now then
  return {0, math.ceil(turn - now), 0}
end
local sent = redis.call('ZCARD', KEYS[1])
-- A job without a place goes behind the ones in its line (whose turn has not come, or came
-- moments ago and who are on their way back), so a burst is served in order across replicas.
local ahead = 0
if turn < 0 then
  ahead = redis.call('ZCOUNT', line, now - 2000, '+inf')
end
-- Bulk mail yields to every priority job that waits or is on its way back.
local priority_waiting = 0
if bulk then
  priority_waiting = redis.call('ZCOUNT', KEYS[2], now - 2000, '+inf')
end
if sent < limit and ahead == 0 and priority_waiting == 0 then
  redis.call('ZADD', KEYS[1], now, ARGV[4])
  redis.call('PEXPIRE', KEYS[1], window)
  if turn >= 0 then leave() end
  return {1, 0, 0}
end
-- Not now. The budget frees a send when the oldest logged one leaves the window.
local at = now + 1
if sent >= limit then
  local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  at = math.max(at, tonumber(oldest[2]) + window)
end
if turn < 0 then
  if bulk and cap > 0 and redis.call('ZCARD', KEYS[5]) >= cap then
    -- Its requester already holds its share of the bulk line: no place now (the places of
    -- everyone else stay ahead); it asks again after a window.
    if now + window > deadline then return {3, 0, 0} end
    return {0, window, 0}
  end
  -- A new place: after the last one of its line, spaced at the budget's rate, so the line
  -- comes back one job at a time instead of all at once.
  local last = redis.call('ZREVRANGE', line, 0, 0, 'WITHSCORES')
  if last[2] then
    at = math.max(at, tonumber(last[2]) + spacing)
  end
end
if bulk then
  -- Behind every priority place (a bulk place given earlier moves back when priority jobs
  -- came in since).
  local last = redis.call('ZREVRANGE', KEYS[2], 0, 0, 'WITHSCORES')
  if last[2] then
    at = math.max(at, tonumber(last[2]) + spacing)
  end
end
if at > deadline then
  if turn >= 0 then leave() end
  return {3, 0, 0}
end
-- (A job whose turn came while the budget was still full keeps the head of its line.)
redis.call('ZADD', line, at, job)
local latest = redis.call('ZREVRANGE', line, 0, 0, 'WITHSCORES')
redis.call('PEXPIRE', line, math.ceil(tonumber(latest[2]) - now + keep))
if bulk and cap > 0 then
  redis.call('ZADD', KEYS[5], at, job)
  -- Kept as long as its latest place (a job placed again can get an earlier turn than places
  -- given after it).
  local last_held = redis.call('ZREVRANGE', KEYS[5], 0, 0, 'WITHSCORES')
  redis.call('PEXPIRE', KEYS[5], math.ceil(tonumber(last_held[2]) - now + keep))
end
return {0, math.ceil(at - now), 0}
