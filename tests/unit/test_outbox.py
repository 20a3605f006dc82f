"""The per-channel send queue and the per-message coalescer (bot/outbox.py)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest

from bot.outbox import ChannelTurns, LatestUpdate, SendTurns, SharedLimits


async def test_one_sender_at_a_time_results_first_and_one_place_per_key() -> None:
    turns = SendTurns()
    order: list[str] = []
    release = asyncio.Event()

    async def send(key: str, *, urgent: bool = False) -> None:
        async with turns.turn(key, urgent=urgent):
            order.append(key)
            if key == "first":
                await release.wait()

    first = asyncio.create_task(send("first"))
    await asyncio.sleep(0)
    others = [
        asyncio.create_task(send("status-a")),
        asyncio.create_task(send("status-b")),
        asyncio.create_task(send("result-c", urgent=True)),
    ]
    await asyncio.sleep(0)
    assert order == ["first"] and turns.waiting == 3
    turns.hurry("status-b")  # its result arrived while it waited
    release.set()
    await asyncio.gather(first, *others)
    assert order == ["first", "result-c", "status-b", "status-a"]
    assert turns.idle


async def test_a_cancelled_waiter_gives_up_its_place() -> None:
    turns = SendTurns()
    order: list[str] = []
    release = asyncio.Event()

    async def send(key: str) -> None:
        async with turns.turn(key):
            order.append(key)
            if key == "holder":
                await release.wait()

    holder = asyncio.create_task(send("holder"))
    await asyncio.sleep(0)
    quitter = asyncio.create_task(send("quitter"))
    stayer = asyncio.create_task(send("stayer"))
    await asyncio.sleep(0)
    quitter.cancel()
    release.set()
    await asyncio.gather(holder, stayer)
    assert quitter.cancelled()
    assert order == ["holder", "stayer"]
    assert turns.idle


async def test_channels_have_separate_queues() -> None:
    turns = ChannelTurns()
    assert turns[1] is turns[1]
    assert turns[1] is not turns[2]


class Recorder:
    """An `apply` that records what it was given and can be held in flight."""

    def __init__(self) -> None:
        self.applied: list[tuple[str, bool]] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.fail_next_final = False

    async def apply(self, update: str, final: bool) -> int:
        await self.gate.wait()
        if final and self.fail_next_final:
            self.fail_next_final = False
            raise RuntimeError("Discord said no")
        self.applied.append((update, final))
        return len(self.applied)


async def test_the_latest_progress_wins_and_the_result_skips_what_waits() -> None:
    recorder = Recorder()
    updates: LatestUpdate[str, int] = LatestUpdate(recorder.apply, progress_interval=0)
    recorder.gate.clear()
    updates.show("queued")  # in flight, held at the gate
    await asyncio.sleep(0)
    updates.show("submitted")
    updates.show("pending")  # replaces "submitted", which is never sent
    finished = asyncio.create_task(updates.finish("result"))
    await asyncio.sleep(0)
    updates.show("late progress")  # after the end: ignored
    recorder.gate.set()
    assert await finished == 2
    assert recorder.applied == [("queued", False), ("result", True)]
    updates.show("even later")
    await asyncio.sleep(0.01)
    assert recorder.applied == [("queued", False), ("result", True)]


async def test_progress_is_spaced_out_but_the_result_is_not() -> None:
    recorder = Recorder()
    updates: LatestUpdate[str, int] = LatestUpdate(recorder.apply, progress_interval=0.3)
    updates.show("queued")
    await asyncio.sleep(0.01)
    updates.show("submitted")
    await asyncio.sleep(0.05)
    assert recorder.applied == [("queued", False)]  # "submitted" waits for its interval
    loop = asyncio.get_running_loop()
    started = loop.time()
    await updates.finish("result")
    assert loop.time() - started < 0.1
    assert recorder.applied == [("queued", False), ("result", True)]


async def test_a_failed_result_can_be_retried() -> None:
    recorder = Recorder()
    recorder.fail_next_final = True
    updates: LatestUpdate[str, int] = LatestUpdate(recorder.apply)
    with pytest.raises(RuntimeError, match="Discord said no"):
        await updates.finish("result")
    assert not updates.finished
    assert await updates.finish("result") == 1
    assert updates.finished


async def test_what_is_sent_is_the_newest_state_when_the_gate_opens() -> None:
    """A status still waiting for the channel when the result arrives is never posted."""
    recorder = Recorder()
    channel_free = asyncio.Event()

    @contextlib.asynccontextmanager
    async def busy_channel(urgent: bool) -> AsyncIterator[None]:
        await channel_free.wait()
        yield

    updates: LatestUpdate[str, int] = LatestUpdate(
        recorder.apply, gate=lambda: busy_channel, progress_interval=0
    )
    updates.show("queued")
    await asyncio.sleep(0.01)
    finished = asyncio.create_task(updates.finish("result"))
    await asyncio.sleep(0.01)
    channel_free.set()
    assert await finished == 1
    assert recorder.applied == [("result", True)]


async def test_a_second_result_while_the_first_is_sent_is_sent_too_and_both_return() -> None:
    """A job delivered again (its first delivery's task was dropped when the process lost
    its lease, and the job resumed) while the first result is still on its way: neither
    caller waits for ever."""
    recorder = Recorder()
    updates: LatestUpdate[str, int] = LatestUpdate(recorder.apply)
    recorder.gate.clear()
    first = asyncio.create_task(updates.finish("result"))
    await asyncio.sleep(0)  # the first result is being sent
    second = asyncio.create_task(updates.finish("result again"))
    await asyncio.sleep(0)
    recorder.gate.set()
    async with asyncio.timeout(1):
        assert await first == 1
        assert await second == 2
    assert recorder.applied == [("result", True), ("result again", True)]
    assert updates.finished


async def test_a_result_shown_again_after_the_end_is_sent_and_returns() -> None:
    recorder = Recorder()
    updates: LatestUpdate[str, int] = LatestUpdate(recorder.apply)
    assert await updates.finish("result") == 1
    async with asyncio.timeout(1):
        assert await updates.finish("result again") == 2
    assert recorder.applied == [("result", True), ("result again", True)]


async def test_a_shared_pause_then_a_cool_down_per_channel() -> None:
    now = [100.0]
    limits = SharedLimits(cool_down=60.0, clock=lambda: now[0])
    assert limits.paused_for(1) == 0 and not limits.hot(1)
    limits.pause(1, 40.0)
    assert limits.paused_for(1) == 40.0 and limits.hot(1)
    assert limits.paused_for(2) == 0 and not limits.hot(2)  # another channel is untouched
    limits.pause(1, 10.0)  # a shorter answer never shortens the pause already known
    assert limits.paused_for(1) == 40.0
    now[0] += 40.0
    assert limits.paused_for(1) == 0 and limits.hot(1)  # it takes requests: results first
    now[0] += 59.9
    assert limits.hot(1)
    now[0] += 0.2
    assert not limits.hot(1)  # a minute without a refusal: progress may be shown again
    await limits.wait(1)  # nothing to wait for


async def test_waiting_out_a_shared_pause_takes_as_long_as_the_service_said() -> None:
    limits = SharedLimits()
    loop = asyncio.get_running_loop()
    limits.pause("channel", 0.05)
    started = loop.time()
    await limits.wait("channel")
    assert loop.time() - started >= 0.04
    assert limits.paused_for("channel") == 0 and limits.hot("channel")
