"""Leases in Redis: one holder per key at a time, for a bounded time, fenced by a token.

A lease is the key `<key>` holding `<token>:<holder>`, set only when absent and with a time to
live (`SET NX PX` semantics, done in a script so the token is drawn only when the lease is
taken). The token comes from `INCR <fence key>`: it grows with every grant, so a write stamped
with an older token is recognisably stale. A missing counter starts at Redis's clock in
milliseconds, not at 0, so tokens keep growing when Redis loses its data (a restart without
persistence): the database remembers the highest token that wrote (`stream_fences`), and a new
owner must outrank it. That holds while the earlier counter was granted fewer tokens than the
milliseconds between its start and the restart, and Redis's clock does not step back.

The holder renews with compare-and-renew (PEXPIRE only if the value is still its own) and
releases with compare-and-delete: a holder whose lease lapsed and was granted to another can
neither renew nor release it.

The holder also fences itself by its own clock: a lease it could not renew for `SELF_FENCE` of
the time to live counts as lost, before Redis hands it to anyone else. No consensus beyond this:
Redis decides, the lease lapses when its holder goes quiet.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from redis.asyncio import Redis

#: Share of the time to live after the last successful renewal beyond which the holder
#: considers its lease lost (it renews every third of it: two renewals may fail).
SELF_FENCE = 0.8
#: The fence counter outlives its last grant by a day (no stale holder lives that long).
FENCE_KEEP_S = 86_400

# KEYS: lease, fence. ARGV: holder, ttl ms, seconds the fence counter outlives its last grant.
# Returns the token, or 0 when the lease is held. A new counter starts at the clock in ms.
_ACQUIRE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
if redis.call('EXISTS', KEYS[2]) == 0 then
  local now = redis.call('TIME')
  redis.call('SET', KEYS[2], string.format('%.0f', now[1] * 1000 + math.floor(now[2] / 1000)))
end
local token = redis.call('INCR', KEYS[2])
redis.call('EXPIRE', KEYS[2], ARGV[3])
redis.call('SET', KEYS[1], token .. ':' .. ARGV[1], 'PX', ARGV[2])
return token
"""

# KEYS: lease. ARGV: value, ttl ms.
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""

# KEYS: lease. ARGV: value.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


@dataclass(slots=True)
class Lease:
    """A lease this process holds: `value` is what the key holds while it is ours."""

    key: str
    token: int
    value: str
    ttl_ms: int
    valid_until: float  # monotonic clock: after this, the holder stops acting on it
    lost: bool = False

    def valid(self) -> bool:
        return not self.lost and time.monotonic() < self.valid_until


class Leases:
    """Acquire, renew and release leases on keys of one Redis."""

    def __init__(self, redis: Redis, holder: str) -> None:
        self.redis = redis
        self.holder = holder
        self._acquire = redis.register_script(_ACQUIRE)
        self._renew = redis.register_script(_RENEW)
        self._release = redis.register_script(_RELEASE)

    async def acquire(self, key: str, fence_key: str, ttl_ms: int) -> Lease | None:
        """The lease on `key`, or None when someone holds it."""
        started = time.monotonic()
        token = int(
            await self._acquire(keys=[key, fence_key], args=[self.holder, ttl_ms, FENCE_KEEP_S])
        )
        if not token:
            return None
        value = f"{token}:{self.holder}"
        return Lease(key, token, value, ttl_ms, started + ttl_ms / 1000 * SELF_FENCE)

    async def renew(self, lease: Lease) -> bool:
        """Extend the lease; False (and `lease.lost`) when it is no longer ours. A renewal that
        fails to reach Redis raises; the lease then lapses by itself at `valid_until`."""
        if lease.lost:
            return False
        started = time.monotonic()
        if int(await self._renew(keys=[lease.key], args=[lease.value, lease.ttl_ms])):
            lease.valid_until = started + lease.ttl_ms / 1000 * SELF_FENCE
            return True
        lease.lost = True
        return False

    async def release(self, lease: Lease) -> None:
        """Give the lease up (a no-op when it already lapsed)."""
        lease.lost = True
        await self._release(keys=[lease.key], args=[lease.value])

    async def held(self, key: str) -> bool:
        """Someone (maybe this process) holds the lease on `key`."""
        return bool(await self.redis.exists(key))
