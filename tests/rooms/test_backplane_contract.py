"""One contract, every backplane: in-process, and Redis (two "processes" sharing a real Redis).

A node is one server process's backplane. In memory every node is the same object (one process);
on Redis each node is its own `RedisBackplane` with its own lease holder id, sharing a key prefix
made for the test. Delivery over Redis is asynchronous: every wait below is bounded.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from redis.asyncio import Redis

from server.rooms.backplane import MemoryBackplane, RedisBackplane
from server.rooms.backplane.base import Backplane, Inbound, Outbound
from server.rooms.protocol import decode

WAIT_S = 5.0


@dataclass(eq=False)
class Sock:
    """A local socket (a backplane `Subscriber`) that keeps what it is given."""

    conn_id: str
    runner_id: str
    moderator: bool = False
    got: list[Outbound] = field(default_factory=list)

    def deliver(self, out: Outbound) -> None:
        self.got.append(out)


@dataclass
class Cluster:
    kind: str
    make: Callable[..., Awaitable[Backplane]]
    nodes: list[Backplane] = field(default_factory=list)

    async def node(self, **kw: Any) -> Backplane:
        bp = await self.make(**kw)
        self.nodes.append(bp)
        return bp


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
async def cluster(request: pytest.FixtureRequest) -> AsyncIterator[Cluster]:
    if request.param == "memory":
        shared = MemoryBackplane()

        async def same(**_: Any) -> Backplane:
            return shared

        c = Cluster("memory", same)
        yield c
        await shared.close()
        return
    url = request.getfixturevalue("redis_url")
    prefix = f"test:bp:{uuid.uuid4().hex[:10]}"
    clients: list[Redis] = []

    async def make(**kw: Any) -> Backplane:
        client = Redis.from_url(url)
        clients.append(client)
        return RedisBackplane(client, prefix=prefix, **kw)

    c = Cluster("redis", make)
    yield c
    for bp in c.nodes:
        await bp.close()
    admin = Redis.from_url(url)
    keys = [k async for k in admin.scan_iter(match=f"{prefix}:*", count=500)]
    if keys:
        await admin.delete(*keys)
    await admin.aclose()
    for client in clients:
        await client.aclose()


def room() -> str:
    return str(uuid.uuid4())


class Inbox:
    def __init__(self) -> None:
        self.got: list[Inbound] = []

    async def __call__(self, msg: Inbound) -> None:
        self.got.append(msg)


async def eventually(check: Callable[[], bool], timeout: float = WAIT_S) -> None:
    async with asyncio.timeout(timeout):
        while not check():
            await asyncio.sleep(0.01)


def gps(seq: int) -> Any:
    return decode(f'{{"type": "gps", "seq": {seq}, "t": 1700000000.5, "lat": 1.0, "lon": 2.0}}')


async def test_only_one_node_claims_a_room(cluster: Cluster) -> None:
    a, b = await cluster.node(), await cluster.node()
    rid = room()
    assert await a.claim(rid, Inbox())
    assert not await b.claim(rid, Inbox())
    assert not await a.claim(rid, Inbox())  # not twice either
    other = room()
    assert await b.claim(other, Inbox())  # rooms are independent
    await a.release(rid)
    await b.release(other)


async def test_forward_reaches_the_owner_from_any_node(cluster: Cluster) -> None:
    a, b = await cluster.node(), await cluster.node()
    rid, inbox = room(), Inbox()
    assert await a.claim(rid, inbox)
    await b.forward(rid, Inbound("c1", "r1", "runner", "join", extra={"moderator": False}))
    await b.forward(rid, Inbound("c1", "r1", "runner", "frame", gps(7), 1700000001.0))
    await a.forward(rid, Inbound("c2", "r2", "moderator", "join"))
    await b.forward(rid, Inbound("c1", "r1", "runner", "leave"))
    await eventually(lambda: len(inbox.got) == 4)
    join, fix, _, leave = inbox.got
    assert (join.conn_id, join.kind, dict(join.extra)) == ("c1", "join", {"moderator": False})
    assert fix.frame == gps(7) and fix.received_at == 1700000001.0 and fix.role == "runner"
    assert (leave.conn_id, leave.kind, leave.frame) == ("c1", "leave", None)
    await a.release(rid)


async def test_publish_reaches_every_matching_subscriber_on_every_node_in_order(
    cluster: Cluster,
) -> None:
    a, b = await cluster.node(), await cluster.node()
    rid, inbox = room(), Inbox()
    assert await a.claim(rid, inbox)
    here, there = Sock("c-a", "r1"), Sock("c-b", "r2", moderator=True)
    a.subscribe(rid, here)
    b.subscribe(rid, there)
    # a socket joins (subscribe, then forward): frames published after that reach it
    await a.forward(rid, Inbound("c-a", "r1", "runner", "join"))
    await b.forward(rid, Inbound("c-b", "r2", "moderator", "join"))
    await eventually(lambda: len(inbox.got) == 2)
    for i in range(1, 21):
        await a.publish(rid, Outbound("event", f'{{"seq":{i},"epoch":"e1"}}', seq=i))
    await a.publish(rid, Outbound("direct", "mods", audience="moderators"))
    await a.publish(rid, Outbound("direct", "ack-r1", audience="runner", to="r1"))
    await a.publish(rid, Outbound("direct", "to-c-b", audience="connection", to="c-b"))
    personal = {"r1": '{"rank":1}', "r2": '{"rank":2}'}
    await a.publish(rid, Outbound("standings", '{"type":"standings"', personal=personal))
    await eventually(lambda: len(here.got) == 22 and len(there.got) == 23)
    for sock in (here, there):
        assert [o.seq for o in sock.got if o.kind == "event"] == list(range(1, 21))
        assert sock.got[-1].personal == personal
    assert [o.text for o in here.got if o.kind == "direct"] == ["ack-r1"]
    assert [o.text for o in there.got if o.kind == "direct"] == ["mods", "to-c-b"]
    batch = tuple(Outbound("event", f"e{i}", seq=i) for i in (3, 4))
    await a.publish(rid, Outbound("replay", "", "connection", "c-a", seq=4, batch=batch))
    await eventually(lambda: here.got[-1].kind == "replay")
    assert [(o.seq, o.text) for o in here.got[-1].batch] == [(3, "e3"), (4, "e4")]
    nodes = {id(n): n for n in (a, b)}.values()
    assert sum(n.local_subscribers(rid) for n in nodes) == 2
    a.unsubscribe(rid, here)
    b.unsubscribe(rid, there)
    assert a.local_subscribers(rid) == 0 and b.local_subscribers(rid) == 0
    await a.release(rid)


async def test_a_released_room_can_be_claimed_by_another_node(cluster: Cluster) -> None:
    a, b = await cluster.node(), await cluster.node()
    rid, first, second = room(), Inbox(), Inbox()
    assert await a.claim(rid, first)
    await a.release(rid)
    assert await b.claim(rid, second)
    await a.forward(rid, Inbound("c1", "r1", "runner", "join"))
    await eventually(lambda: len(second.got) == 1)
    assert first.got == []
    await b.release(rid)


# Only across processes: in one process the owner is this process, and it cannot lapse.
@pytest.mark.parametrize("cluster", [pytest.param("redis", marks=pytest.mark.redis)], indirect=True)
async def test_a_lapsed_lease_lets_another_node_claim_and_fences_the_old_owner(
    cluster: Cluster,
) -> None:
    assert isinstance(cluster, Cluster)
    # `a` never renews within the test: as if its process froze or died
    a = await cluster.node(ttl_ms=600, renew_every_s=3600.0)
    b = await cluster.node(ttl_ms=600)
    rid, old, new = room(), Inbox(), Inbox()
    assert await a.claim(rid, old)
    assert not await b.claim(rid, new)
    sock = Sock("c-b", "r1")
    b.subscribe(rid, sock)
    await b.forward(rid, Inbound("c-b", "r1", "runner", "join"))
    await eventually(lambda: len(old.got) == 1)
    claimed = False
    async with asyncio.timeout(WAIT_S):
        while not claimed:
            await asyncio.sleep(0.05)
            claimed = await b.claim(rid, new)
    assert isinstance(a, RedisBackplane) and isinstance(b, RedisBackplane)
    assert not a.owns(rid) and b.owns(rid)
    await a.publish(rid, Outbound("event", '{"seq":9,"epoch":"stale"}', seq=9))  # fenced
    await b.publish(rid, Outbound("event", '{"seq":9,"epoch":"fresh"}', seq=9))
    # the new owner first closes every socket with 1012 (they reconnect to it), then its frames
    await eventually(lambda: any(o.kind == "event" for o in sock.got))
    assert (sock.got[0].kind, sock.got[0].close_code) == ("close", 1012)
    assert [o.text for o in sock.got if o.kind == "event"] == ['{"seq":9,"epoch":"fresh"}']
    kept = await b.history(rid)
    assert kept is not None and (kept.epoch, kept.seq, kept.version) == ("fresh", 9, None)
    # the socket joined the old owner: its input is dropped until it joins the new one (it
    # was closed with 1012 and reconnects), so that a fix resent later is not skipped
    await b.forward(rid, Inbound("c-b", "r1", "runner", "frame", gps(5)))
    await b.forward(rid, Inbound("c-b2", "r1", "runner", "join"))
    await b.forward(rid, Inbound("c-b2", "r1", "runner", "frame", gps(3)))
    await eventually(lambda: len(new.got) == 2)
    assert [(m.conn_id, m.kind) for m in new.got] == [("c-b2", "join"), ("c-b2", "frame")]
    assert len(old.got) == 1
    await b.release(rid)


@pytest.mark.redis
async def test_input_lost_on_the_way_closes_that_socket_instead_of_skipping_fixes(
    redis_url: str,
) -> None:
    """Each connection's input is numbered as it is forwarded. The owner applies it only in
    order: after a gap (a Redis that restarted empty lost some, or a stale owner read it) the
    connection is closed with 1012 and nothing after the gap is applied, so the client's resend
    on its next connection fills the gap (a fix at or below the applied seq is never applied)."""
    from server.rooms.backplane.redis import encode_inbound

    client = Redis.from_url(redis_url)
    prefix = f"test:bp:{uuid.uuid4().hex[:10]}"
    owner = RedisBackplane(client, prefix=prefix)
    rid, inbox = room(), Inbox()
    try:
        assert await owner.claim(rid, inbox)
        sock, other = Sock("c1", "r1"), Sock("c2", "r2")
        owner.subscribe(rid, sock)
        owner.subscribe(rid, other)
        await asyncio.sleep(0.2)  # the subscription is up (the claim's close went before it)
        sock.got.clear()
        other.got.clear()
        key = owner.keys(rid).input

        async def raw(msg: Inbound, n: int) -> None:  # as a follower would forward it
            await client.xadd(key, {"m": encode_inbound(msg, n)})

        await raw(Inbound("c1", "r1", "runner", "join"), 1)
        await raw(Inbound("c1", "r1", "runner", "frame", gps(1)), 2)
        await raw(Inbound("c1", "r1", "runner", "frame", gps(1)), 2)  # forwarded twice
        await raw(Inbound("c1", "r1", "runner", "frame", gps(3)), 4)  # input 3 lost
        await raw(Inbound("c1", "r1", "runner", "frame", gps(4)), 5)
        await raw(Inbound("c2", "r2", "runner", "frame", gps(9)), 7)  # joined elsewhere
        await raw(Inbound("c3", "r1", "runner", "join"), 1)  # r1 again, reconnected
        await raw(Inbound("c3", "r1", "runner", "frame", gps(2)), 2)
        await eventually(lambda: len(inbox.got) == 4)
        await eventually(lambda: bool(sock.got) and bool(other.got))
        got = [(m.conn_id, m.kind, m.frame.seq if m.frame else None) for m in inbox.got]
        assert got == [("c1", "join", None), ("c1", "frame", 1), ("c3", "join", None),
                       ("c3", "frame", 2)]  # fmt: skip
        assert [(o.kind, o.close_code) for o in sock.got] == [("close", 1012)]
        assert [(o.kind, o.close_code) for o in other.got] == [("close", 1012)]
        await asyncio.sleep(0.3)
        assert len(inbox.got) == 4 and len(sock.got) == 1  # closed once, nothing more applied
    finally:
        await owner.release(rid)
        await owner.close()
        await client.aclose()


@pytest.mark.redis
async def test_forwarded_input_is_numbered_per_connection(redis_url: str) -> None:
    from server.rooms.backplane.redis import decode_numbered

    client = Redis.from_url(redis_url)
    prefix = f"test:bp:{uuid.uuid4().hex[:10]}"
    owner, follower = RedisBackplane(client, prefix=prefix), RedisBackplane(client, prefix=prefix)
    rid, inbox = room(), Inbox()
    try:
        assert await owner.claim(rid, inbox)
        for conn in ("a", "b"):
            await follower.forward(rid, Inbound(conn, "r", "runner", "join"))
        await follower.forward(rid, Inbound("a", "r", "runner", "frame", gps(1)))
        await follower.forward(rid, Inbound("a", "r", "runner", "leave"))
        await follower.forward(rid, Inbound("b", "r", "runner", "frame", gps(2)))
        await eventually(lambda: len(inbox.got) == 5)
        entries = await client.xrange(owner.keys(rid).input)
        numbered = [decode_numbered(fields[b"m"]) for _id, fields in entries]
        assert [(m.conn_id, m.kind, n) for m, n in numbered] == [
            ("a", "join", 1), ("b", "join", 1), ("a", "frame", 2), ("a", "leave", 3),
            ("b", "frame", 2),
        ]  # fmt: skip
    finally:
        await owner.release(rid)
        await owner.close()
        await follower.close()
        await client.aclose()


async def test_a_backplane_loop_that_fails_unexpectedly_is_logged_and_started_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A dead input reader once stalled a room for good after Redis restarted (an error outside
    its retry): every backplane loop now runs under `_kept_up`."""
    from server.rooms.backplane import redis as rb

    runs: list[int] = []

    async def flaky() -> None:
        runs.append(1)
        if len(runs) < 3:
            raise ConnectionError("Connection closed by server.")

    with caplog.at_level("ERROR", logger=rb.__name__):
        async with asyncio.timeout(WAIT_S):
            await rb._kept_up(flaky, "read r1")
    assert len(runs) == 3
    failures = [r for r in caplog.records if "backplane read r1 failed" in r.getMessage()]
    assert len(failures) == 2 and all(r.exc_info for r in failures)
