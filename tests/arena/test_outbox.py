"""A socket's outbox: order, batching, gathering, a closed socket."""

from __future__ import annotations

import asyncio
import json

from realtime.outbox import Outbox


class Socket:
    """Records frames; each write takes a moment, as a real one can."""

    def __init__(self, delay: float = 0.0) -> None:
        self.frames: list[str] = []
        self.delay = delay
        self.fail = False

    async def write(self, text: str) -> None:
        if self.fail:
            raise ConnectionResetError("the client went away")
        await asyncio.sleep(self.delay)
        self.frames.append(text)

    def events(self) -> list[object]:
        out: list[object] = []
        for frame in self.frames:
            data = json.loads(frame)
            out.extend(data if isinstance(data, list) else [data])
        return out


def ev(i: int) -> str:
    return json.dumps({"type": "gen.delta", "seq": i})


async def test_without_batching_every_event_is_its_own_frame_in_order() -> None:
    socket = Socket(delay=0.001)
    box = Outbox(socket.write, batch=False, gather=0.05)  # no gathering without batching
    for i in range(20):
        box.push(ev(i))
    await box.send(json.dumps({"type": "battle.state"}))
    assert len(socket.frames) == 21
    assert [json.loads(f).get("seq") for f in socket.frames] == [*range(20), None]


async def test_batched_events_waiting_together_share_one_frame_in_order() -> None:
    socket = Socket()
    box = Outbox(socket.write, batch=True, gather=0.02)
    for i in range(5):
        box.push(ev(i))
    assert socket.frames == []  # gathering
    await asyncio.sleep(0.05)
    assert len(socket.frames) == 1
    assert json.loads(socket.frames[0]) == [{"type": "gen.delta", "seq": i} for i in range(5)]
    box.push(ev(5))
    await asyncio.sleep(0.05)
    assert socket.frames[1] == ev(5)  # alone: a plain object, not a list of one
    assert (box.events, box.frames) == (6, 2)


async def test_a_reply_skips_the_gathering_but_not_the_events_before_it() -> None:
    socket = Socket()
    box = Outbox(socket.write, batch=True, gather=10.0)
    box.push(ev(0))
    box.push(ev(1))
    reply = json.dumps({"type": "error", "code": "busy"})
    await asyncio.wait_for(box.send(reply), 1.0)  # not held for the 10 s gather
    assert socket.events() == [
        {"type": "gen.delta", "seq": 0},
        {"type": "gen.delta", "seq": 1},
        {"type": "error", "code": "busy"},
    ]


async def test_events_pushed_while_a_frame_is_written_follow_it() -> None:
    socket = Socket(delay=0.01)
    box = Outbox(socket.write, batch=True, gather=0.0)
    box.push(ev(0))
    await asyncio.sleep(0.002)  # the first frame is being written
    for i in range(1, 4):
        box.push(ev(i))
    await asyncio.sleep(0.05)
    assert socket.events() == [{"type": "gen.delta", "seq": i} for i in range(4)]
    assert len(socket.frames) == 2


async def test_a_failed_write_closes_the_outbox_and_drops_what_waits() -> None:
    socket = Socket()
    box = Outbox(socket.write, batch=True, gather=0.0)
    socket.fail = True
    box.push(ev(0))
    await asyncio.sleep(0.01)
    assert box.closed
    box.push(ev(1))
    await box.send(ev(2))  # returns: nothing can reach a gone client
    socket.fail = False
    await asyncio.sleep(0.01)
    assert socket.frames == []


async def test_close_cancels_a_gathering_frame() -> None:
    socket = Socket()
    box = Outbox(socket.write, batch=True, gather=0.02)
    box.push(ev(0))
    box.close()
    await asyncio.sleep(0.05)
    assert socket.frames == []


class StuckSocket:
    """A reader that stops reading: the first write never returns until let go."""

    def __init__(self) -> None:
        self.frames: list[str] = []
        self.go = asyncio.Event()

    async def write(self, text: str) -> None:
        await self.go.wait()
        self.frames.append(text)


async def test_a_reader_that_does_not_read_stays_bounded_and_gets_one_state() -> None:
    socket = StuckSocket()
    resyncs: list[asyncio.Task[None]] = []
    state = json.dumps({"type": "battle.state"})

    def overflowed() -> None:  # as the consumer does: the saved state, in a task
        resyncs.append(asyncio.get_running_loop().create_task(box.resync(state)))

    box = Outbox(socket.write, batch=True, gather=0.0, max_events=50, on_overflow=overflowed)
    box.push(ev(0))
    await asyncio.sleep(0.01)  # the writer took it and is stuck writing it
    most = 0
    for i in range(1, 20_000):
        box.push(ev(i))
        most = max(most, len(box._pending))
        if i % 1000 == 0:
            await asyncio.sleep(0)  # the resync task runs meanwhile
    assert most <= 50
    assert box.dropped > 19_000
    socket.go.set()
    await asyncio.sleep(0.05)
    events = Socket.events(socket)  # type: ignore[arg-type]
    states = [e for e in events if e == {"type": "battle.state"}]
    assert len(states) == 1, len(states)
    assert len(events) < 120  # the stuck frame, one state, what came after it
    assert all(t.done() for t in resyncs)


async def test_waiting_bytes_are_bounded_too() -> None:
    socket = StuckSocket()
    calls: list[int] = []
    box = Outbox(
        socket.write, batch=False, gather=0.0, max_bytes=10_000, on_overflow=lambda: calls.append(1)
    )
    big = json.dumps({"type": "gen.delta", "text": "x" * 3000})
    for _ in range(5):
        box.push(big)
    assert calls == [1]
    assert box.stale and box._pending == []
    box.push(big)  # dropped until the state comes
    assert box._pending == [] and box.dropped >= 5
    socket.go.set()
    await box.resync(json.dumps({"type": "battle.state"}))
    assert not box.stale
    assert json.loads(socket.frames[-1]) == {"type": "battle.state"}
