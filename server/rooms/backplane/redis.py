"""The Redis backplane: rooms across server processes (the scale-out backend).

Per room (`<prefix>:{<room>}:...`, the braces keep a room's keys in one cluster slot):

- `lease` / `fence`: the owner's lease (`server.leases`): `<token>:<node>`, 3 s time to live,
  renewed every second by compare-and-renew; `fence` is the INCR counter the tokens come from.
- `in`: a stream of client input for the owner. Any process `XADD`s its sockets' frames; the
  owner reads them through the consumer group `owner` and `XACK`s each batch once its room took
  it (at-least-once; a new owner first claims what the old one left pending). The room applies
  a gps fix once per runner `seq`, so a redelivered frame is harmless.
- `out`: the pub/sub channel of the room's frames, already encoded. The owner publishes each
  frame once, through a script that checks the lease first (a stale owner's frames are dropped:
  fencing), and every process that holds sockets of the room hands it to them.
- `hist` / `meta`: the last `HISTORY` numbered broadcasts and the room's `epoch`, `seq` and
  `version` (the race stream version its broadcasts cover), written by the same script, so that
  a process taking the room over continues the sequence, broadcasts the events its predecessor
  committed and did not get to send, and clients resume across processes.

Ownership: a process claims a room when a client of it joins and no one holds the lease; the
registry follows rooms owned elsewhere and takes them over when their lease lapses
(`server/rooms/registry.py`). A new owner closes every socket of the room once with 1012 (they
reconnect, get a welcome with their `acked_seq` and resend what was not stored).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.exceptions import RedisError, ResponseError

from server.leases import Lease, Leases
from server.rooms.backplane.base import Inbound, Inbox, Kept, Outbound, Subscriber
from server.rooms.backplane.memory import MemoryBackplane, NoOwner
from server.rooms.protocol import FrameError, decode

log = logging.getLogger(__name__)

DEFAULT_PREFIX = "retrorun:rooms"
LEASE_TTL_MS = 3000
HISTORY = 1000
GROUP = "owner"
INPUT_MAXLEN = 20_000
READ_COUNT = 500
READ_BLOCK_MS = 500
PUBLISH_BATCH = 256
#: A room's keys in Redis outlive its last write by a day, then go.
KEEP_S = 86_400
READY_WAIT_S = 5.0
#: The owner also reclaims input left pending this long by another consumer (a stale owner
#: that read it after its lease lapsed), this often.
RECLAIM_IDLE_MS, RECLAIM_EVERY_S = 1000, 1.0
#: Closes that mean "this process is letting the room go", not "the room ended": they go to
#: this process's sockets only (the others stay with the room and its next owner).
LOCAL_CLOSES = frozenset({1001, 1012})
#: Close code sent to every socket of a room when a new owner takes it over.
TAKEOVER_CLOSE = 1012
#: Input waits this long for an unreachable Redis (a restart, a failover) before the socket is
#: closed with `TAKEOVER_CLOSE` (the client reconnects and resends what was not acked).
FORWARD_RETRY_S = 5.0

# KEYS: lease, channel, hist, meta. ARGV: lease value, message, seq (0: not numbered), epoch,
# history size, event text, seconds to keep, stream version (0: none). Returns 0 when the lease
# is not (or no longer) the caller's.
_PUBLISH = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if ARGV[3] ~= '0' then
  if redis.call('HGET', KEYS[4], 'epoch') ~= ARGV[4] then
    redis.call('DEL', KEYS[3])
    redis.call('HDEL', KEYS[4], 'version')
    redis.call('HSET', KEYS[4], 'epoch', ARGV[4])
  end
  redis.call('RPUSH', KEYS[3], ARGV[3] .. ':' .. ARGV[6])
  redis.call('LTRIM', KEYS[3], -tonumber(ARGV[5]), -1)
  redis.call('HSET', KEYS[4], 'seq', ARGV[3])
  if ARGV[8] ~= '0' then redis.call('HSET', KEYS[4], 'version', ARGV[8]) end
  redis.call('EXPIRE', KEYS[3], ARGV[7])
  redis.call('EXPIRE', KEYS[4], ARGV[7])
end
redis.call('PUBLISH', KEYS[2], ARGV[2])
return 1
"""


@dataclass(slots=True)
class _Keys:
    lease: str
    fence: str
    input: str
    channel: str
    hist: str
    meta: str


@dataclass(eq=False)
class _Owned:
    """A room this process owns."""

    lease: Lease
    inbox: Inbox
    #: (message, seq, epoch, event text, stream version) per frame, in order.
    queue: deque[tuple[bytes, int, str, str, int]] = field(default_factory=deque)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    idle: asyncio.Event = field(default_factory=asyncio.Event)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    #: Connections that joined this owner, with the number of their last input read: input of
    #: any other is from a socket of an earlier owner, closed at the claim; it reconnects, joins
    #: and resends in order.
    joined: dict[str, int] = field(default_factory=dict)
    #: Connections told to reconnect: their input was lost on the way, or read elsewhere.
    cut: set[str] = field(default_factory=set)


def encode_outbound(out: Outbound, node: str | None = None) -> bytes:
    """An outbound frame as one pub/sub message (`node`: for that process's sockets only)."""
    return orjson.dumps(_out_dict(out) | ({"n": node} if node else {}))


def _out_dict(out: Outbound) -> dict[str, Any]:
    d: dict[str, Any] = {"k": out.kind, "t": out.text}
    if out.audience != "all":
        d["a"] = out.audience
    if out.to is not None:
        d["to"] = out.to
    if out.seq:
        d["s"] = out.seq
    if out.personal:
        d["p"] = dict(out.personal)
    if out.batch:
        d["b"] = [_out_dict(o) for o in out.batch]
    if out.close_code:
        d["c"] = out.close_code
    return d


def _out_of(d: dict[str, Any]) -> Outbound:
    return Outbound(
        d["k"],
        d["t"],
        d.get("a", "all"),
        d.get("to"),
        int(d.get("s", 0)),
        d.get("p"),
        tuple(_out_of(b) for b in d.get("b", ())),
        int(d.get("c", 0)),
    )


def decode_outbound(raw: bytes) -> tuple[Outbound, str | None]:
    d = orjson.loads(raw)
    return _out_of(d), d.get("n")


def encode_inbound(msg: Inbound, n: int = 0) -> bytes:
    """`n`: the input's number on its connection (1 for the join, +1 each), so the owner sees
    input lost on the way (a Redis that restarted empty, a stale owner that read it)."""
    frame = msg.frame
    text: str | None
    if frame is None:
        text = None
    elif hasattr(frame, "model_dump_json"):
        text = frame.model_dump_json(exclude_none=True)
    else:
        text = orjson.dumps(frame).decode()
    return orjson.dumps(
        {
            "c": msg.conn_id,
            "r": msg.runner_id,
            "o": msg.role,
            "k": msg.kind,
            "f": text,
            "t": msg.received_at,
            "x": dict(msg.extra),
            "n": n,
        }
    )


def decode_inbound(raw: bytes) -> Inbound:
    return decode_numbered(raw)[0]


def decode_numbered(raw: bytes) -> tuple[Inbound, int]:
    """An input and its number on its connection (0: not numbered)."""
    d = orjson.loads(raw)
    frame = decode(d["f"]) if d.get("f") is not None else None
    msg = Inbound(d["c"], d["r"], d["o"], d["k"], frame, float(d.get("t", 0.0)), d.get("x", {}))
    return msg, int(d.get("n", 0))


async def _kept_up(loop: Callable[[], Awaitable[None]], what: str) -> None:
    """Run one of the backplane's loops; an error it did not expect is logged and the loop
    started again (a dead forwarder or listener would silently stall every room here)."""
    while True:
        try:
            await loop()
            return
        except Exception:
            log.exception("backplane %s failed; restarting it", what)
            await asyncio.sleep(0.5)


def _s(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class RedisBackplane:
    """Rooms owned by one process each (a lease in Redis), sockets in every process."""

    def __init__(
        self,
        redis: Redis,
        *,
        prefix: str = DEFAULT_PREFIX,
        ttl_ms: int = LEASE_TTL_MS,
        renew_every_s: float | None = None,
        node: str | None = None,
    ) -> None:
        self.redis = redis
        self.prefix = prefix
        self.ttl_ms = ttl_ms
        self.renew_every_s = renew_every_s if renew_every_s is not None else ttl_ms / 3000
        #: This process in lease values and consumer names (the pid helps an operator).
        self.node = node or f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.leases = Leases(redis, self.node)
        self._publish_script = redis.register_script(_PUBLISH)
        self._local = MemoryBackplane()  # this process's sockets, indexed by room
        self._owned: dict[str, _Owned] = {}
        self._pubsub: PubSub | None = None
        self._channels: dict[str, str] = {}  # channel -> room id, subscribed (or asked)
        self._ready: dict[str, asyncio.Future[None]] = {}  # channel -> subscription confirmed
        self._sync = asyncio.Queue[str]()  # room ids whose subscription may need changing
        self._listening = asyncio.Event()  # the pub/sub connection is up
        self._tasks: list[asyncio.Task[None]] = []
        self._closed = False
        #: Input waiting for the forwarder: (stream key, encoded message, written?).
        self._input: deque[tuple[str, bytes, asyncio.Future[bool]]] = deque()
        #: (room, connection) -> the number of its last input forwarded.
        self._forwarded: dict[tuple[str, str], int] = {}
        self._input_wake = asyncio.Event()

    # keys

    def keys(self, room_id: str) -> _Keys:
        base = f"{self.prefix}:{{{room_id}}}"
        return _Keys(
            f"{base}:lease", f"{base}:fence", f"{base}:in", f"{base}:out", f"{base}:hist",
            f"{base}:meta",
        )  # fmt: skip

    # lifecycle

    def _start(self) -> None:
        if self._tasks or self._closed:
            return
        self._tasks = [
            asyncio.create_task(_kept_up(self._listen, "listen"), name="backplane-listen"),
            asyncio.create_task(_kept_up(self._subscriptions, "subscribe"), name="backplane-sub"),
            asyncio.create_task(_kept_up(self._renew, "renew"), name="backplane-renew"),
            asyncio.create_task(_kept_up(self._forwarder, "forward"), name="backplane-forward"),
        ]

    async def close(self) -> None:
        """Stop: this process's sockets are closed with 1012 (they reconnect elsewhere)."""
        self._closed = True
        for room_id in list(self._owned):
            await self.release(room_id)
        for room_id in set(self._channels.values()):
            await self._local.publish(room_id, Outbound("close", "", close_code=1012))
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks = []
        for _key, _raw, done in self._input:  # never written: the sockets were closed above
            if not done.done():
                done.set_result(False)
        self._input.clear()
        if self._pubsub is not None:
            with contextlib.suppress(Exception):
                await self._pubsub.aclose()  # type: ignore[no-untyped-call, unused-ignore]
            self._pubsub = None
        await self._local.close()

    # ownership

    async def claim(self, room_id: str, inbox: Inbox) -> bool:
        self._start()
        if room_id in self._owned:
            return False
        k = self.keys(room_id)
        lease = await self.leases.acquire(k.lease, k.fence, self.ttl_ms)
        if lease is None:
            return False
        owned = self._owned[room_id] = _Owned(lease, inbox)
        owned.idle.set()
        try:
            with contextlib.suppress(ResponseError):  # BUSYGROUP: a previous owner made it
                await self.redis.xgroup_create(k.input, GROUP, id="0", mkstream=True)
        except BaseException:
            del self._owned[room_id]
            await self.leases.release(lease)
            raise
        pump = functools.partial(self._pump, room_id, owned)
        read = functools.partial(self._read, room_id, owned)
        owned.tasks = [
            asyncio.create_task(_kept_up(pump, f"pump {room_id}"), name=f"bp-pump-{room_id}"),
            asyncio.create_task(_kept_up(read, f"read {room_id}"), name=f"bp-read-{room_id}"),
        ]
        # Sockets already in the room (on any process) joined an earlier owner: they reconnect
        # to this one and resend what it did not store. Sent on every claim, not only when the
        # token says there was an owner before: Redis may have lost the counter.
        log.info("room %s claimed (lease token %d)", room_id, lease.token)
        self._enqueue(room_id, owned, Outbound("close", "", close_code=TAKEOVER_CLOSE))
        with contextlib.suppress(TimeoutError):  # sockets that join from now on do not get it
            await asyncio.wait_for(self._drained(owned), READY_WAIT_S)
        return True

    async def release(self, room_id: str) -> None:
        owned = self._owned.get(room_id)
        if owned is None:
            return
        if owned.lease.valid():  # send what is queued while the lease is still ours
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._drained(owned), 5.0)
        del self._owned[room_id]
        for task in owned.tasks:
            task.cancel()
        for task in owned.tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        with contextlib.suppress(RedisError, OSError):
            await self.leases.release(owned.lease)

    def fence_token(self, room_id: str) -> int | None:
        """The token of this process's lease on the room (None: not the owner): the room stamps
        its appends with it, so the database refuses them once a later owner wrote."""
        owned = self._owned.get(room_id)
        return None if owned is None else owned.lease.token

    def owns(self, room_id: str) -> bool:
        """This process holds the room's lease (by its own clock: it stops before it lapses)."""
        owned = self._owned.get(room_id)
        return owned is not None and owned.lease.valid()

    async def owner_alive(self, room_id: str) -> bool:
        """Some process (maybe this one) holds the room's lease."""
        return await self.leases.held(self.keys(room_id).lease)

    async def history(self, room_id: str) -> Kept | None:
        """The room's `epoch`, last `seq`, kept numbered broadcasts and the stream version they
        cover (None: none kept)."""
        k = self.keys(room_id)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hmget(k.meta, ["epoch", "seq", "version"])
            pipe.lrange(k.hist, 0, -1)
            (epoch, seq, version), items = await pipe.execute()
        if epoch is None or seq is None:
            return None
        out = []
        for item in items:
            s, _, text = _s(item).partition(":")
            out.append(Outbound("event", text, seq=int(s)))
        return Kept(_s(epoch), int(seq), out, None if version is None else int(version))

    async def _renew(self) -> None:
        while True:
            await asyncio.sleep(self.renew_every_s)
            for room_id, owned in list(self._owned.items()):
                try:
                    if not await self.leases.renew(owned.lease):
                        log.warning("room %s: lease lost to another process", room_id)
                except (RedisError, OSError):
                    log.warning("room %s: lease not renewed (Redis unreachable)", room_id)

    # input

    async def forward(self, room_id: str, message: Inbound) -> None:
        self._start()
        k = self.keys(room_id)
        ready = self._ready.get(k.channel)
        if ready is not None and not ready.done():  # answers must not beat our subscription
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(ready), READY_WAIT_S)
        if self._closed:
            raise NoOwner(room_id)
        conn = (room_id, message.conn_id)
        n = self._forwarded.get(conn, 0) + 1
        if message.kind == "leave":
            self._forwarded.pop(conn, None)
        else:
            self._forwarded[conn] = n
        done = asyncio.get_running_loop().create_future()
        self._input.append((k.input, encode_inbound(message, n), done))
        self._input_wake.set()
        if await done:
            return
        self._forwarded.pop(conn, None)
        # Redis stays away: this process's sockets of the room reconnect later (their input
        # waits in the client, unacked) rather than end as if the room were over.
        log.warning("room %s: input not forwarded (Redis unreachable); sockets closed", room_id)
        await self._local.publish(room_id, Outbound("close", "", close_code=TAKEOVER_CLOSE))
        raise NoOwner(room_id)

    async def _forwarder(self) -> None:
        """Write every socket's input to the room streams in pipelined batches, one connection
        at a time: a frame per socket at once would take a pooled connection each and exhaust
        the pool (then lease renewals fail too). A batch Redis refuses is retried until its
        items are `FORWARD_RETRY_S` old; those futures then get False."""
        q = self._input
        while True:
            if not q:
                self._input_wake.clear()
                await self._input_wake.wait()
                continue
            batch = [q.popleft() for _ in range(min(len(q), READ_COUNT))]
            started = time.monotonic()
            while True:
                try:
                    async with self.redis.pipeline(transaction=False) as pipe:
                        for key, raw, _done in batch:
                            pipe.xadd(key, {"m": raw}, maxlen=INPUT_MAXLEN)
                        for key in {key for key, _raw, _done in batch}:
                            pipe.expire(key, KEEP_S)
                        await pipe.execute()
                    ok = True
                    break
                except (RedisError, OSError):
                    if time.monotonic() - started >= FORWARD_RETRY_S:
                        ok = False
                        break
                    await asyncio.sleep(0.2)
            for _key, _raw, done in batch:
                if not done.done():
                    done.set_result(ok)

    async def _read(self, room_id: str, owned: _Owned) -> None:
        """Feed the owner's inbox from the room's input stream (pending entries first)."""
        key = self.keys(room_id).input
        pending_read = False  # first everything pending, whoever read it (until that succeeds)
        next_reclaim = time.monotonic() + RECLAIM_EVERY_S
        while owned.lease.valid():
            try:
                if not pending_read:
                    await self._reclaim(room_id, key, owned, 0)
                    pending_read = True
                got: Any = await self.redis.xreadgroup(
                    GROUP, self.node, {key: ">"}, count=READ_COUNT, block=READ_BLOCK_MS
                )
                for _stream, entries in got or ():
                    await self._handle(room_id, key, owned, entries)
                if time.monotonic() >= next_reclaim:
                    next_reclaim = time.monotonic() + RECLAIM_EVERY_S
                    await self._reclaim(room_id, key, owned, RECLAIM_IDLE_MS)
            except (RedisError, OSError):
                log.warning("room %s: input stream unreadable; retrying", room_id)
                await asyncio.sleep(0.2)

    async def _reclaim(self, room_id: str, key: str, owned: _Owned, min_idle_ms: int) -> None:
        """Take over input another consumer (a previous owner) read and did not acknowledge."""
        start: Any = "0-0"
        for _ in range(1000):
            reply: Any = await self.redis.xautoclaim(
                key, GROUP, self.node, min_idle_time=min_idle_ms, start_id=start, count=READ_COUNT
            )
            await self._handle(room_id, key, owned, reply[1])
            start = reply[0]
            if _s(start) == "0-0":
                return

    async def _handle(self, room_id: str, key: str, owned: _Owned, entries: list[Any]) -> None:
        if not entries or not owned.lease.valid():
            return  # a stale owner leaves them pending: the next owner reclaims them
        ids = []
        for entry_id, fields in entries:
            ids.append(entry_id)
            if not fields:
                continue
            raw = fields.get(b"m") or fields.get("m")
            try:
                msg, n = decode_numbered(raw)
            except (FrameError, ValueError, KeyError, TypeError):
                log.warning("dropping an undecodable room input %r", entry_id)
                continue
            if self._in_order(room_id, owned, msg, n):
                await owned.inbox(msg)
        if ids:
            await self.redis.xack(key, GROUP, *ids)

    def _in_order(self, room_id: str, owned: _Owned, msg: Inbound, n: int) -> bool:
        """Whether to apply this input: the next one of a connection that joined this owner.

        Input of a connection that did not join this owner (it joined an earlier one, or its
        join was read by a stale owner), or that arrives after a gap (a Redis that restarted
        empty lost some), is not applied: applying it could skip fixes, since a fix at or below
        the applied seq is not applied again. The connection is closed instead (1012, once);
        the client reconnects, joins and resends every fix not acked, in order."""
        conn = msg.conn_id
        if conn in owned.cut:
            if msg.kind == "leave":
                owned.cut.discard(conn)
            return False
        last = owned.joined.get(conn)
        if msg.kind == "join" and last is None:
            owned.joined[conn] = n
            return True
        if last is None or (n and n > last + 1):
            if last is not None:
                log.warning(
                    "room %s: input of %s lost on the way (%d after %d); it reconnects",
                    room_id,
                    conn,
                    n,
                    last,
                )
            owned.joined.pop(conn, None)
            owned.cut.add(conn)
            close = Outbound("close", "", "connection", conn, close_code=TAKEOVER_CLOSE)
            self._enqueue(room_id, owned, close)
            return False
        if n and n <= last:
            return False  # forwarded twice (a batch retried after a partial write)
        if msg.kind == "leave":
            owned.joined.pop(conn, None)
        else:
            owned.joined[conn] = n
        return True

    # output

    async def publish(self, room_id: str, out: Outbound) -> None:
        owned = self._owned.get(room_id)
        local_close = out.kind == "close" and out.close_code in LOCAL_CLOSES
        if owned is None or not owned.lease.valid():
            if local_close:  # our sockets still need to hear it
                await self._local.publish(room_id, out)
            else:
                log.debug("room %s: not the owner, frame dropped", room_id)
            return
        self._enqueue(room_id, owned, out, local_only=local_close)

    def _enqueue(
        self, room_id: str, owned: _Owned, out: Outbound, local_only: bool = False
    ) -> None:
        seq, epoch = 0, ""
        if out.kind == "event" and out.seq:
            seq = out.seq
            epoch = str(orjson.loads(out.text).get("epoch", ""))
        message = encode_outbound(out, self.node if local_only else None)
        owned.queue.append((message, seq, epoch, out.text if seq else "", out.version))
        owned.idle.clear()
        owned.wake.set()

    async def _drained(self, owned: _Owned) -> None:
        await owned.idle.wait()

    async def _pump(self, room_id: str, owned: _Owned) -> None:
        """Publish the room's frames in order, pipelined; stop once the lease is gone."""
        k = self.keys(room_id)
        q = owned.queue
        while True:
            if not q:
                owned.idle.set()
                owned.wake.clear()
                await owned.wake.wait()
                continue
            batch = [q.popleft() for _ in range(min(len(q), PUBLISH_BATCH))]
            try:
                async with self.redis.pipeline(transaction=False) as pipe:
                    for message, seq, epoch, text, version in batch:
                        await self._publish_script(
                            keys=[k.lease, k.channel, k.hist, k.meta],
                            args=[
                                owned.lease.value,
                                message,
                                seq,
                                epoch,
                                HISTORY,
                                text,
                                KEEP_S,
                                version,
                            ],
                            client=pipe,
                        )
                    results = await pipe.execute()
            except (RedisError, OSError):
                log.warning("room %s: publish failed; retrying", room_id)
                q.extendleft(reversed(batch))
                if not owned.lease.valid():
                    q.clear()
                await asyncio.sleep(0.2)
                continue
            if not all(int(r) for r in results):
                log.warning("room %s: lease lost; frames of the stale owner dropped", room_id)
                owned.lease.lost = True
                q.clear()

    # sockets of this process

    def subscribe(self, room_id: str, subscriber: Subscriber) -> None:
        self._start()
        channel = self.keys(room_id).channel
        self._local.subscribe(room_id, subscriber)
        if channel not in self._channels:
            self._channels[channel] = room_id
            self._ready[channel] = asyncio.get_running_loop().create_future()
            self._sync.put_nowait(room_id)

    def unsubscribe(self, room_id: str, subscriber: Subscriber) -> None:
        self._local.unsubscribe(room_id, subscriber)
        if not self._local.local_subscribers(room_id):
            self._sync.put_nowait(room_id)

    def local_subscribers(self, room_id: str) -> int:
        return self._local.local_subscribers(room_id)

    async def _subscriptions(self) -> None:
        """Subscribe to a room's channel while this process holds sockets of it (the only task
        that (un)subscribes: one pub/sub connection, set up here)."""
        pubsub = self._pubsub = self.redis.pubsub()
        for attempt in range(1_000_000):
            try:
                await pubsub.subscribe(f"{self.prefix}:node:{self.node}")
                break
            except (RedisError, OSError):
                log.warning("backplane: Redis unreachable (attempt %d); retrying", attempt + 1)
                await asyncio.sleep(0.5)
        self._listening.set()
        subscribed: set[str] = set()
        for room_id in set(self._channels.values()):  # started again: subscribe anew
            self._sync.put_nowait(room_id)
        while True:
            room_id = await self._sync.get()
            channel = self.keys(room_id).channel
            want = bool(self._local.local_subscribers(room_id))
            try:
                if want and channel not in subscribed:
                    await pubsub.subscribe(channel)
                    subscribed.add(channel)
                elif not want and channel in subscribed:
                    await pubsub.unsubscribe(channel)
                    subscribed.discard(channel)
                if not want:
                    self._channels.pop(channel, None)
                    ready = self._ready.pop(channel, None)
                    if ready is not None and not ready.done():
                        ready.set_result(None)
            except (RedisError, OSError):
                log.warning("room %s: (un)subscribe failed; retrying", room_id)
                await asyncio.sleep(0.2)
                self._sync.put_nowait(room_id)

    async def _resync(self) -> None:
        """After the subscription was down, frames of this process's rooms may have been
        published and lost (pub/sub keeps nothing), among them a new owner's takeover close:
        close every local socket once with `TAKEOVER_CLOSE`, so each client reconnects, gets
        a welcome from the current owner and resends what was not acked."""
        rooms = set(self._channels.values())
        if rooms:
            log.warning("backplane resubscribed: closing the sockets of %d room(s)", len(rooms))
        for room_id in rooms:
            await self._local.publish(room_id, Outbound("close", "", close_code=TAKEOVER_CLOSE))

    async def _listen(self) -> None:
        """Hand every frame of a room this process holds sockets of to those sockets."""
        await self._listening.wait()
        pubsub = self._pubsub
        assert pubsub is not None
        lost = False
        while True:
            try:
                msg = await pubsub.get_message(ignore_subscribe_messages=False, timeout=1.0)
            except (RedisError, OSError):
                log.warning("backplane subscription lost; reconnecting")
                lost = True
                await asyncio.sleep(0.2)
                continue
            if lost:  # resubscribed (redis-py does it on reconnect): frames may be missing
                lost = False
                await self._resync()
            if msg is None:
                continue
            channel = _s(msg["channel"])
            if msg["type"] == "subscribe":
                ready = self._ready.get(channel)
                if ready is not None and not ready.done():
                    ready.set_result(None)
                continue
            if msg["type"] != "message":
                continue
            room_id = self._channels.get(channel)
            if room_id is None:
                continue
            try:
                out, node = decode_outbound(msg["data"])
            except (ValueError, KeyError, TypeError):
                log.warning("room %s: undecodable frame dropped", room_id)
                continue
            if node is None or node == self.node:
                await self._local.publish(room_id, out)
