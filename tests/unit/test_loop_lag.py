"""The loop-lag sampler: what makes interaction handlers acknowledge before their checks."""

from __future__ import annotations

import time

from bot.operations.loop_lag import LoopLag


async def test_a_blocked_loop_is_seen_and_remembered_then_forgotten() -> None:
    lag = LoopLag(tick=0.01, memory=0.3)
    assert lag.recent() == 0.0  # not started: nothing to say
    lag.start()
    try:
        await lag.next_tick()
        assert lag.recent() < 0.3  # an idle loop is on time
        time.sleep(0.6)  # noqa: ASYNC251 - deliberately block the loop, as a burst of handlers would
        await lag.next_tick()
        assert lag.recent() >= 0.5
        await lag.next_tick()
        assert lag.recent() >= 0.5  # remembered past one quiet tick
        started = time.monotonic()
        while time.monotonic() - started < 0.35:  # past `memory`, on time again
            await lag.next_tick()
        await lag.next_tick()
        assert lag.recent() < 0.3  # the 0.6 s stall is forgotten
    finally:
        await lag.stop()
    assert lag.recent() == 0.0
