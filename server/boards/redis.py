"""Leaderboards in Redis sorted sets: the scale-out backend.

Each board is three keys, `<prefix>:{<board>}:z` (a sorted set), `<prefix>:{<board>}:h` (a hash
runner id -> member) and `<prefix>:{<board>}:v` (the board's version, see below). The braces are a
cluster hash tag, so the keys live in one slot and the Lua scripts below may touch them together.

Every member has ZSET score 0, so Redis orders members by their bytes, and the member carries the
whole sort key:

    <d><16 hex: order value as sortable float64 bits><16 hex: reached_at><runner_id>

`d` is the direction (`h`/`l`, the same on every member of a board), the order value is the score
negated on higher-is-better boards, and the float64 bits are mapped so that byte order equals
numeric order. So the order is exact for every finite float64 score and every `reached_at` in
0..2**63-1: nothing is squeezed into the 53-bit ZSET score, and the score reads back bit for bit.
The price is a member of 33 + len(runner_id) bytes and a hash lookup to find it.

ZRANK and ZRANGE on a same-score set are O(log N) and O(log N + M). A write or a rank read is one
Lua script (HGET, then ZREM/ZADD/HSET or ZRANK), so one round trip and atomic. Bulk writes
pipeline the script calls.

Versions: every write that changes a board increments its `:v` counter in the same script, so
the version moves with every process's writes and a page read with its version is a consistent
snapshot. A counter that does not exist yet (a new board, a cleared one, a Redis that lost its
data) starts from a random 52-bit value, so a version never comes back with other contents.
A board written before versions existed has no counter (its version reads as empty) until its
next write; the API's cached pages also expire after a second, which bounds what a process still
running older code (writing without a bump) could leave unseen during a rolling upgrade.
`page` reads the version, the total and the page in one script, and when the caller already holds
the current version it answers with the version alone (a few bytes): that is how the API's page
cache stays exact across processes for one small round trip. The page comes back as one bulk
string of netstring-like `<len>:<member>` items, not as 100 bulk replies: parsing them one by one
in redis-py cost more than the read itself.
"""

from __future__ import annotations

import functools
import secrets
import struct
from collections.abc import Iterable
from typing import Any

from redis.asyncio import Redis

from game.ranking import Direction, Entry, check_reached_at, order_value
from server.boards.base import BoardEntry, BoardPage, check_page, check_radius

DEFAULT_PREFIX = "retrorun:boards"
_SIGN = 1 << 63
_MASK = (1 << 64) - 1
_DOUBLE = struct.Struct(">d")
_HEAD = 33  # direction char + 16 hex + 16 hex
_HIGHER = ord("h")
#: Script calls per pipeline round trip in submit_many.
_BATCH = 5000

#: A new version counter starts below 2**52, leaving room to count up within Redis's 64 bits.
_SEED_BITS = 52
#: `page(unless=...)` when the caller holds no version: never equal to a stored one.
_NO_VERSION = "-"

# KEYS: zset, hash, version. ARGV: runner id, new member, seed for a new version counter.
_SUBMIT = """
local old = redis.call('HGET', KEYS[2], ARGV[1])
if old == ARGV[2] then return 0 end
if old then redis.call('ZREM', KEYS[1], old) end
redis.call('ZADD', KEYS[1], 0, ARGV[2])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
redis.call('SET', KEYS[3], ARGV[3], 'NX')
redis.call('INCR', KEYS[3])
return 1
"""

# KEYS: zset, hash, version. ARGV: runner id, seed for a new version counter.
_REMOVE = """
local old = redis.call('HGET', KEYS[2], ARGV[1])
if not old then return 0 end
redis.call('ZREM', KEYS[1], old)
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('SET', KEYS[3], ARGV[2], 'NX')
redis.call('INCR', KEYS[3])
return 1
"""

# KEYS: zset, version. ARGV: first index, last index, the caller's version.
# Returns {version} when that is the board's version, else {version, count, items} where items
# is one string of `<len>:<member>` per entry, best first.
_PAGE = """
local v = redis.call('GET', KEYS[2]) or ''
if v == ARGV[3] then return {v} end
local members = redis.call('ZRANGE', KEYS[1], ARGV[1], ARGV[2])
for i, m in ipairs(members) do members[i] = #m .. ':' .. m end
return {v, redis.call('ZCARD', KEYS[1]), table.concat(members)}
"""

# KEYS: zset, hash. ARGV: runner id, radius. Returns {first rank - 1, members} or nil.
_AROUND = """
local member = redis.call('HGET', KEYS[2], ARGV[1])
if not member then return false end
local r = redis.call('ZRANK', KEYS[1], member)
local radius = tonumber(ARGV[2])
local first = r - radius
if first < 0 then first = 0 end
return {first, redis.call('ZRANGE', KEYS[1], first, r + radius)}
"""

# KEYS: zset, hash. ARGV: runner id. Returns {rank - 1, member} or nil.
_RANK = """
local member = redis.call('HGET', KEYS[2], ARGV[1])
if not member then return false end
return {redis.call('ZRANK', KEYS[1], member), member}
"""


class RedisLeaderboards:
    """`Leaderboards` on `redis.asyncio`; every key starts with `prefix`."""

    def __init__(self, redis: Redis, *, prefix: str = DEFAULT_PREFIX) -> None:
        self.redis = redis
        self.prefix = prefix
        self._submit = redis.register_script(_SUBMIT)
        self._remove = redis.register_script(_REMOVE)
        self._rank = redis.register_script(_RANK)
        self._around = redis.register_script(_AROUND)
        self._page = redis.register_script(_PAGE)

    #: `page` versions live beside the boards: they move with every process's writes.
    shared_versions = True

    def _keys(self, board: str) -> list[str]:
        """zset, hash, version."""
        base = f"{self.prefix}:{{{board}}}"
        return [f"{base}:z", f"{base}:h", f"{base}:v"]

    # -- writes -----------------------------------------------------------------------------

    async def submit(
        self,
        board: str,
        runner_id: str,
        score: float,
        reached_at: int,
        *,
        direction: Direction,
    ) -> None:
        member = encode_member(score, reached_at, runner_id, direction)
        await self._submit(keys=self._keys(board), args=[runner_id, member, _seed()])

    async def submit_many(
        self, board: str, entries: Iterable[Entry], *, direction: Direction
    ) -> None:
        keys = self._keys(board)
        pending = 0
        async with self.redis.pipeline(transaction=False) as pipe:
            for e in entries:
                member = encode_member(e.score, e.reached_at, e.runner_id, direction)
                await self._submit(keys=keys, args=[e.runner_id, member, _seed()], client=pipe)
                pending += 1
                if pending == _BATCH:
                    await pipe.execute()
                    pending = 0
            if pending:
                await pipe.execute()

    async def remove(self, board: str, runner_id: str) -> None:
        await self._remove(keys=self._keys(board), args=[runner_id, _seed()])

    async def clear(self, board: str) -> None:
        await self.redis.unlink(*self._keys(board))

    async def clear_all(self) -> None:
        pattern = _glob_escape(self.prefix) + ":*"
        cursor: int = 0
        while True:
            cursor, keys = await self.redis.scan(cursor, match=pattern, count=1000)
            if keys:
                await self.redis.unlink(*keys)
            if cursor == 0:
                return

    # -- reads ------------------------------------------------------------------------------

    async def top(self, board: str, limit: int = 100, offset: int = 0) -> list[BoardEntry]:
        check_page(limit, offset)
        if limit == 0:
            return []
        page = await self.page(board, limit, offset)
        assert page is not None  # no version given: always read
        return page.entries

    async def page(
        self, board: str, limit: int = 100, offset: int = 0, *, unless: str | None = None
    ) -> BoardPage | None:
        check_page(limit, offset)
        z, _h, v = self._keys(board)
        # ZRANGE 0 -1 is the whole set: an empty page reads from an index past any board
        first, last = (offset, offset + limit - 1) if limit else (-1, -2)
        known = _NO_VERSION if unless is None else unless
        found: Any = await self._page(keys=[z, v], args=[first, last, known])
        version = found[0].decode() if isinstance(found[0], bytes) else str(found[0])
        if len(found) == 1:
            return None
        items = found[2]
        if isinstance(items, str):  # a client made with decode_responses=True
            items = items.encode()
        return BoardPage(int(found[1]), decode_items(offset, items), version)

    async def rank(self, board: str, runner_id: str) -> BoardEntry | None:
        found: Any = await self._rank(keys=self._keys(board), args=[runner_id])
        if found is None:
            return None
        index, member = found
        return decode_member(int(index) + 1, member)

    async def around(self, board: str, runner_id: str, radius: int = 5) -> list[BoardEntry]:
        check_radius(radius)
        found: Any = await self._around(keys=self._keys(board), args=[runner_id, radius])
        if found is None:
            return []
        first, members = found
        return [decode_member(int(first) + i, m) for i, m in enumerate(members, start=1)]

    async def count(self, board: str) -> int:
        return int(await self.redis.zcard(self._keys(board)[0]))


def encode_member(score: float, reached_at: int, runner_id: str, direction: Direction) -> str:
    """The ZSET member whose byte order is the board order (see the module docstring)."""
    bits = int.from_bytes(_DOUBLE.pack(order_value(score, direction)), "big")
    # Negative floats: flip every bit (larger magnitude sorts first); positive: set the sign bit.
    bits = bits ^ _MASK if bits & _SIGN else bits | _SIGN
    d = "h" if direction is Direction.HIGHER else "l"
    return f"{d}{bits:016x}{check_reached_at(reached_at):016x}{runner_id}"


def decode_member(rank: int, member: bytes | str) -> BoardEntry:
    """The entry a member encodes, at `rank`."""
    text = member.decode() if isinstance(member, bytes) else member
    bits = int(text[1:17], 16)
    bits = bits ^ _SIGN if bits & _SIGN else bits ^ _MASK
    (value,) = _DOUBLE.unpack(bits.to_bytes(8, "big"))
    score = -value + 0.0 if text[0] == "h" else value
    return BoardEntry(rank, text[_HEAD:], score, int(text[17:_HEAD], 16))


def decode_items(offset: int, items: bytes) -> list[BoardEntry]:
    """The entries of `_PAGE`'s `<len>:<member>` string, ranked from `offset` + 1."""
    members: list[bytes] = []
    pos, end = 0, len(items)
    while pos < end:
        colon = items.index(b":", pos)
        stop = colon + 1 + int(items[pos:colon])
        members.append(items[colon + 1 : stop])
        pos = stop
    n = len(members)
    # Every order value in one struct call (see encode_member for the bit mapping).
    bits = [int(m[1:17], 16) for m in members]
    values = _doubles(n).unpack(
        _words(n).pack(*[b ^ _SIGN if b & _SIGN else b ^ _MASK for b in bits])
    )
    return [
        BoardEntry(
            rank,
            m[_HEAD:].decode(),
            -value + 0.0 if m[0] == _HIGHER else value,
            int(m[17:_HEAD], 16),
        )
        for rank, m, value in zip(range(offset + 1, offset + n + 1), members, values, strict=True)
    ]


@functools.lru_cache(maxsize=64)
def _doubles(n: int) -> struct.Struct:
    return struct.Struct(f">{n}d")


@functools.lru_cache(maxsize=64)
def _words(n: int) -> struct.Struct:
    return struct.Struct(f">{n}Q")


def _seed() -> int:
    return secrets.randbits(_SEED_BITS)


def _glob_escape(text: str) -> str:
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)
