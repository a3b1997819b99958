"""Slack's per-workspace budgets shared by every replica: token buckets in Redis.

Slack counts calls per method per workspace, whichever process makes them: three replicas
pacing on their own spend three times the budget and meet 429s. Here one bucket per
(workspace, method) lives in Redis and each call slot is taken by a Lua script (atomic on
the server, timed by the server's clock, so replicas' clocks do not matter). A bucket also
keeps, per replica, the rank of its most deserving waiting caller (a final edit first, then
the one waiting longest): a slot goes to the replica whose caller ranks first, so the order
the single-process pacer keeps holds across replicas. The rate adapts as one: it halves
once per 429 episode for everyone, everyone pauses for ``Retry-After``, and it grows back
while callers wait.
"""

from __future__ import annotations

from redis.asyncio import Redis

# numbers go back into Redis at full precision: a rate rounded on the way would sit under
# the documented floor and never grow

# KEYS: bucket hash, heads zset (replica -> rank), seen zset (replica -> last asked)
# ARGV: replica, rank, base rate (calls/s), burst, stale after (s)
# -> "wait,rate": wait 0 = the slot is yours; > 0 = seconds until one may be; -1 = another
#    replica's caller ranks first (ask again shortly)
_TAKE = """
local function num(x) return string.format('%.17g', x) end
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
local replica, rank = ARGV[1], tonumber(ARGV[2])
local burst = tonumber(ARGV[4])
redis.call('zadd', KEYS[2], rank, replica)
redis.call('zadd', KEYS[3], now, replica)
for _, gone in ipairs(redis.call('zrangebyscore', KEYS[3], '-inf', now - tonumber(ARGV[5]))) do
  redis.call('zrem', KEYS[2], gone)
  redis.call('zrem', KEYS[3], gone)
end
local b = redis.call('hmget', KEYS[1], 'tokens', 'stamp', 'rate', 'paused_until')
local rate = tonumber(b[3]) or tonumber(ARGV[3])
local tokens = tonumber(b[1]) or burst
local stamp = tonumber(b[2]) or now
local paused = tonumber(b[4]) or 0
if now > stamp then
  tokens = math.min(burst, tokens + (now - stamp) * rate)
  stamp = now
end
local wait = 0
if now < paused then
  wait = paused - now
elseif tokens < 1 then
  wait = (1 - tokens) / rate
else
  local best = redis.call('zrange', KEYS[2], 0, 0, 'WITHSCORES')
  if best[1] ~= replica and tonumber(best[2]) < rank then wait = -1 end
end
if wait == 0 then
  tokens = tokens - 1
  redis.call('zrem', KEYS[2], replica)
end
redis.call('hset', KEYS[1], 'tokens', num(tokens), 'stamp', num(stamp), 'rate', num(rate))
for i = 1, 3 do redis.call('expire', KEYS[i], 3600) end
return num(wait) .. ',' .. num(rate)
"""

# KEYS: bucket hash. ARGV: retry after (s), floor rate, base rate
_THROTTLE = """
local function num(x) return string.format('%.17g', x) end
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
local retry = tonumber(ARGV[1])
local b = redis.call('hmget', KEYS[1], 'rate', 'last_decrease', 'paused_until')
local rate = tonumber(b[1]) or tonumber(ARGV[3])
local last = tonumber(b[2]) or -1e9
if now - last > math.max(5, 2 * retry) then
  rate = math.max(tonumber(ARGV[2]), rate * 0.5)
  last = now
end
local paused = math.max(tonumber(b[3]) or 0, now + retry)
redis.call('hset', KEYS[1], 'rate', num(rate), 'last_decrease', num(last),
  'paused_until', num(paused), 'tokens', '1', 'stamp', num(paused), 'slow', '0')
redis.call('expire', KEYS[1], 3600)
return num(rate)
"""

# KEYS: bucket hash, heads zset. ARGV: base rate, ceiling rate, step, callers waiting at the
# caller's replica (1/0): the rate probes upward only while someone, anywhere, waits
_SUCCEEDED = """
local function num(x) return string.format('%.17g', x) end
local b = redis.call('hmget', KEYS[1], 'rate', 'slow')
local base = tonumber(ARGV[1])
local rate = tonumber(b[1]) or base
if rate < base then
  rate = math.min(base, rate * 1.5)
elseif ARGV[4] == '1' or redis.call('zcard', KEYS[2]) > 0 then
  if b[2] == '0' then rate = rate + tonumber(ARGV[3]) else rate = rate * 1.1 end
  rate = math.min(tonumber(ARGV[2]), rate)
end
redis.call('hset', KEYS[1], 'rate', num(rate))
return num(rate)
"""

# KEYS: bucket hash. ARGV: burst
_REFUND = """
local function num(x) return string.format('%.17g', x) end
local tokens = tonumber(redis.call('hget', KEYS[1], 'tokens') or ARGV[1])
redis.call('hset', KEYS[1], 'tokens', num(math.min(tonumber(ARGV[1]), tokens + 1)))
return 1
"""


class RedisBuckets:
    """The shared buckets of one deployment (keys under the store's prefix)."""

    STALE_AFTER_S = 2.0  # a replica that stopped asking this long ago is out of the line

    def __init__(self, redis: Redis, prefix: str = "sab:") -> None:
        self.redis = redis
        self.prefix = prefix

    def _keys(self, bucket: str) -> list[str]:
        base = f"{self.prefix}bucket:{bucket}"
        return [base, f"{base}:heads", f"{base}:seen"]

    async def take(
        self, bucket: str, replica: str, rank: float, rate: float, burst: float
    ) -> tuple[float, float]:
        """(wait, rate): wait 0 is a slot granted; > 0 seconds to wait; -1 another replica first."""
        answer = await self.redis.eval(  # type: ignore[misc]
            _TAKE,
            3,
            *self._keys(bucket),
            replica,
            repr(rank),
            repr(rate),
            repr(burst),
            repr(self.STALE_AFTER_S),
        )
        wait, current = str(answer).split(",")
        return float(wait), float(current)

    async def leave(self, bucket: str, replica: str) -> None:
        """Nobody waits on this replica any more: out of the line."""
        keys = self._keys(bucket)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.zrem(keys[1], replica)
            pipe.zrem(keys[2], replica)
            await pipe.execute()

    async def throttle(self, bucket: str, retry_after: float, *, floor: float, base: float) -> float:
        answer = await self.redis.eval(  # type: ignore[misc]
            _THROTTLE, 1, self._keys(bucket)[0], repr(retry_after), repr(floor), repr(base)
        )
        return float(answer)

    async def succeeded(
        self, bucket: str, *, base: float, ceiling: float, step: float, waiting: bool = False
    ) -> float:
        keys = self._keys(bucket)
        answer = await self.redis.eval(  # type: ignore[misc]
            _SUCCEEDED, 2, keys[0], keys[1], repr(base), repr(ceiling), repr(step), "1" if waiting else "0"
        )
        return float(answer)

    async def refund(self, bucket: str, burst: float) -> None:
        await self.redis.eval(_REFUND, 1, self._keys(bucket)[0], repr(burst))  # type: ignore[misc]
