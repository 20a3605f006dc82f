"""Sending to a chat service that rate-limits per channel, without letting anyone wait on it.

Two small pieces, independent of Discord (cogs/delivery.py drives them with discord.py):

- `SendTurns`: who may send next in one channel. A channel takes a few posts per second, so
  its senders form one queue: one request in flight at a time (the client library sleeps
  inside it when the bucket runs dry), results before progress, and a sender that asks again
  while it waits keeps its single place. A sender reads what to send only when its turn
  comes, so a status that changed while it waited costs one request, not two.
- `LatestUpdate`: one message's updates. The latest state wins, at most one update is in
  flight, progress updates are spaced out, and the final one (a result or a failure) goes
  next, skipping any progress still waiting.
- `SharedLimits`: channels the service has paused for a limit shared by every sender there
  (Discord's hidden ~30 webhook messages per minute per channel). A pause is a reason to
  wait, never to give up; while a channel is paused and for a while after ("hot"), its
  progress updates give way so that every job's final update gets through.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

U = TypeVar("U")  # an update: what a message should show
R = TypeVar("R")  # what applying the final update returns (e.g. the message id)


class SendTurns:
    """A queue of senders for one channel: one holds the turn at a time."""

    def __init__(self) -> None:
        self._urgent: OrderedDict[Hashable, asyncio.Future[None]] = OrderedDict()
        self._normal: OrderedDict[Hashable, asyncio.Future[None]] = OrderedDict()
        self._holder: Hashable | None = None

    @property
    def idle(self) -> bool:
        return self._holder is None and not self._urgent and not self._normal

    @property
    def waiting(self) -> int:
        return len(self._urgent) + len(self._normal)

    @contextlib.asynccontextmanager
    async def turn(self, key: Hashable, *, urgent: bool = False) -> AsyncIterator[None]:
        """Wait for `key`'s turn, hold it for the body, then pass it on."""
        granted = self._enqueue(key, urgent)
        try:
            await asyncio.shield(granted)
        except asyncio.CancelledError:
            if granted.done() and not granted.cancelled() and self._holder == key:
                self._release()  # granted just as we were cancelled
            else:
                self._withdraw(key, granted)
            raise
        try:
            yield
        finally:
            self._release()

    def hurry(self, key: Hashable) -> None:
        """A waiting sender now carries something urgent (a result): move it up."""
        granted = self._normal.pop(key, None)
        if granted is not None:
            self._urgent[key] = granted

    def _enqueue(self, key: Hashable, urgent: bool) -> asyncio.Future[None]:
        waiting = self._urgent.get(key)
        if waiting is None:
            waiting = self._normal.get(key)
            if waiting is not None and urgent:
                self.hurry(key)
        if waiting is None:
            waiting = asyncio.get_running_loop().create_future()
            (self._urgent if urgent else self._normal)[key] = waiting
            self._grant_next()
        return waiting

    def _withdraw(self, key: Hashable, granted: asyncio.Future[None]) -> None:
        for queue in (self._urgent, self._normal):
            if queue.get(key) is granted:
                del queue[key]
        granted.cancel()

    def _release(self) -> None:
        self._holder = None
        self._grant_next()

    def _grant_next(self) -> None:
        if self._holder is not None:
            return
        for queue in (self._urgent, self._normal):
            while queue:
                key, granted = queue.popitem(last=False)
                if granted.done():
                    continue  # withdrawn
                self._holder = key
                granted.set_result(None)
                return


class ChannelTurns:
    """The `SendTurns` of every channel, created on first use and dropped when idle."""

    def __init__(self) -> None:
        self._channels: dict[int, SendTurns] = {}

    def __getitem__(self, channel_id: int) -> SendTurns:
        turns = self._channels.get(channel_id)
        if turns is None:
            if len(self._channels) > 1000:  # forget channels nobody is waiting in
                self._channels = {k: v for k, v in self._channels.items() if not v.idle}
            turns = self._channels[channel_id] = SendTurns()
        return turns


Gate = Callable[[bool], contextlib.AbstractAsyncContextManager[None]]


def no_gate(urgent: bool) -> contextlib.AbstractAsyncContextManager[None]:
    return contextlib.nullcontext()


class LatestUpdate(Generic[U, R]):
    """The updates of one message. `apply(update, final)` performs one; it is never called
    twice at once. `show` replaces whatever progress is waiting; `finish` waits for the
    final update to be applied and returns its result (or raises its error, after which
    `finish` may be called again to retry).

    `gate(urgent)` is entered before each update is picked, e.g. the channel's `SendTurns`:
    what is applied is the newest state when the gate opens, so a status that was still
    waiting when the result arrived is never sent."""

    def __init__(
        self,
        apply: Callable[[U, bool], Awaitable[R]],
        *,
        gate: Callable[[], Gate] = lambda: no_gate,
        progress_interval: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._apply = apply
        self._gate = gate
        self._interval = progress_interval
        self._clock = clock
        self._progress: U | None = None
        self._final: tuple[U, asyncio.Future[R]] | None = None
        self._finished = False
        self._last_progress_at = -float("inf")
        self._changed = asyncio.Event()
        self._worker: asyncio.Task[None] | None = None
        self.on_final: Callable[[], None] | None = None  # e.g. SendTurns.hurry

    @property
    def busy(self) -> bool:
        return self._worker is not None and not self._worker.done()

    @property
    def finished(self) -> bool:
        return self._finished

    def show(self, update: U) -> None:
        """Best effort: a progress update (skipped if a newer one, or the end, comes first)."""
        if self._finished or self._final is not None:
            return  # a late progress update must never overwrite the result
        self._progress = update
        self._kick()

    async def finish(self, update: U) -> R:
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        # A final update after the end (a job delivered again) is applied as well.
        self._finished = False
        self._final = (update, future)
        self._progress = None
        if self.on_final is not None:
            self.on_final()
        self._kick()
        return await asyncio.shield(future)

    def _kick(self) -> None:
        self._changed.set()
        if not self.busy:
            self._worker = asyncio.create_task(self._run(), name="message-updates")

    async def _run(self) -> None:
        while not self._finished:
            self._changed.clear()
            if self._final is None:
                if self._progress is None:
                    return
                wait = self._last_progress_at + self._interval - self._clock()
                if wait > 0:  # progress is spaced out; the end is not
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._changed.wait(), wait)
                    continue
            async with self._gate()(self._final is not None):
                if self._final is not None:
                    await self._apply_final(*self._final)
                elif self._progress is not None:
                    update, self._progress = self._progress, None
                    self._last_progress_at = self._clock()
                    try:
                        await self._apply(update, False)
                    except Exception:
                        log.debug("a progress update failed", exc_info=True)
            if self._final is not None and self._final[1].done():
                self._final = None  # failed: the caller retries with finish()
                return

    async def _apply_final(self, update: U, future: asyncio.Future[R]) -> None:
        try:
            result = await self._apply(update, True)
        except Exception as exc:
            if not future.done():
                future.set_exception(exc)
                future.exception()  # retrieved: the caller sees it through finish()
            return
        if not future.done():
            future.set_result(result)
        # Ended, unless a newer final update came meanwhile: the loop applies that one too
        # (its caller waits for it).
        if self._final is not None and self._final[1] is future:
            self._finished = True


# After a shared pause, how long a channel stays "hot" (progress gives way, finals go one at
# a time): Discord's shared window is about a minute.
SHARED_COOL_DOWN = 60.0


class SharedLimits:
    """Per channel: until when the service asked everyone to wait (a shared-scope 429), and
    whether that was recent enough that the channel's budget should go to final updates."""

    def __init__(
        self, *, cool_down: float = SHARED_COOL_DOWN, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.cool_down = cool_down
        self._clock = clock
        self._paused_until: dict[Hashable, float] = {}

    def pause(self, channel: Hashable, seconds: float) -> None:
        now = self._clock()
        if len(self._paused_until) > 1000:  # forget channels that cooled down long ago
            self._paused_until = {
                k: until for k, until in self._paused_until.items() if until + self.cool_down > now
            }
        until = now + max(0.0, seconds)
        if until > self._paused_until.get(channel, -float("inf")):
            self._paused_until[channel] = until

    def paused_for(self, channel: Hashable) -> float:
        """Seconds left before the channel takes requests again (0: it does now)."""
        until = self._paused_until.get(channel)
        return 0.0 if until is None else max(0.0, until - self._clock())

    def hot(self, channel: Hashable) -> bool:
        """Paused now, or within `cool_down` seconds after a pause."""
        until = self._paused_until.get(channel)
        return until is not None and self._clock() < until + self.cool_down

    async def wait(self, channel: Hashable) -> None:
        """Wait out the channel's pause (a request refused again pauses it anew)."""
        left = self.paused_for(channel)
        if left > 0:
            await asyncio.sleep(left)  # the service's own word for when to come back
