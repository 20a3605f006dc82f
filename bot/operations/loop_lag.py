"""How far behind the event loop runs.

Discord gives an interaction 3 s for its first answer. When the loop is busy (a burst of
commands, a slow database), a handler that does its checks before answering can miss that,
so the adapters acknowledge first while the loop lags. Also exported as a metric.
"""

from __future__ import annotations

import asyncio

from bot.periodic import cancel_and_wait

TICK = 0.1  # how often the loop is sampled: ten wake-ups a second cost nothing
MEMORY = 2.0  # a lag is remembered this long, so one quiet tick does not hide a busy loop


class LoopLag:
    """Samples how late the loop runs a callback scheduled `TICK` seconds ahead."""

    def __init__(self, *, tick: float = TICK, memory: float = MEMORY) -> None:
        self._tick = tick
        self._memory = memory
        self._last = 0.0
        self._worst = 0.0
        self._worst_at = float("-inf")
        self._task: asyncio.Task[None] | None = None
        self._ticked: asyncio.Event | None = None

    def recent(self) -> float:
        """Seconds of lag: the worst over the last `memory` seconds."""
        if self._task is None:
            return 0.0
        now = asyncio.get_running_loop().time()
        return self._worst if now - self._worst_at <= self._memory else self._last

    def start(self) -> None:
        if self._task is None:
            self._ticked = asyncio.Event()
            self._task = asyncio.get_running_loop().create_task(self._run(), name="loop-lag")

    async def stop(self) -> None:
        task, self._task = self._task, None
        await cancel_and_wait(task)

    async def next_tick(self) -> None:
        """Wait until the next sample is taken (tests)."""
        assert self._ticked is not None, "not started"
        self._ticked.clear()
        await self._ticked.wait()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            asked = loop.time() + self._tick
            await asyncio.sleep(self._tick)
            now = loop.time()
            self._last = max(0.0, now - asked)
            if self._last >= self._worst or now - self._worst_at > self._memory:
                self._worst, self._worst_at = self._last, now
            assert self._ticked is not None
            self._ticked.set()
