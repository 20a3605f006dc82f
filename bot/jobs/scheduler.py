"""Fair, capped admission of jobs to a provider.

Each provider key has a lane: at most `max_active` of its tasks are in flight; the rest wait
in a queue served round-robin by user, so one user's fifty jobs cannot starve another user's
first one. A 429 pauses the lane instead of failing anything.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Hashable, Iterator
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

OwnerT = TypeVar("OwnerT", bound=Hashable)
ItemT = TypeVar("ItemT", bound=Hashable)


class FairQueue(Generic[OwnerT, ItemT]):
    """Round-robin over owners; first-in-first-out within one owner."""

    def __init__(self) -> None:
        self._by_owner: OrderedDict[OwnerT, deque[ItemT]] = OrderedDict()
        self._owner_of: dict[ItemT, OwnerT] = {}

    def __len__(self) -> int:
        return len(self._owner_of)

    def __contains__(self, item: object) -> bool:
        return item in self._owner_of

    def push(self, owner: OwnerT, item: ItemT, *, front: bool = False) -> None:
        if item in self._owner_of:
            return
        items = self._by_owner.get(owner)
        if items is None:
            items = self._by_owner[owner] = deque()
            if front:
                self._by_owner.move_to_end(owner, last=False)
        if front:
            items.appendleft(item)
        else:
            items.append(item)
        self._owner_of[item] = owner

    def pop(self) -> ItemT:
        owner, items = next(iter(self._by_owner.items()))
        item = items.popleft()
        del self._owner_of[item]
        if items:
            self._by_owner.move_to_end(owner)  # the next owner's turn
        else:
            del self._by_owner[owner]
        return item

    def remove(self, item: ItemT) -> bool:
        owner = self._owner_of.pop(item, None)
        if owner is None:
            return False
        items = self._by_owner[owner]
        items.remove(item)
        if not items:
            del self._by_owner[owner]
        return True

    def order(self) -> Iterator[ItemT]:
        """Items in the order `pop` would return them."""
        queues = [list(items) for items in self._by_owner.values()]
        depth = max((len(q) for q in queues), default=0)
        for level in range(depth):
            for items in queues:
                if level < len(items):
                    yield items[level]

    def position(self, item: ItemT) -> int | None:
        """1-based place in line, or None if not queued."""
        if item not in self._owner_of:
            return None
        for index, queued in enumerate(self.order(), start=1):
            if queued == item:
                return index
        return None  # pragma: no cover


class Slot:
    """Permission for one task to be active at the provider; release exactly once."""

    def __init__(self, lane: ProviderLane) -> None:
        self._lane = lane
        self._released = False

    def release(self) -> None:
        if not self._released:
            self._released = True
            self._lane._on_release()


class ProviderLane:
    """Admits queued jobs to one provider within its concurrency cap."""

    def __init__(
        self,
        name: str,
        max_active: int,
        start_job: Callable[[str, Slot], None],
        *,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.max_active = max_active
        self._start_job = start_job
        self._monotonic = monotonic
        self._queue: FairQueue[int, str] = FairQueue()
        self._active = 0
        # The provider's real cap may be lower than ours (a shared account): after a 429 we
        # admit only what it accepted, then probe upwards slowly (additive increase).
        self._limit = max_active
        self._accepted_since_raise = 0
        self._paused_until = 0.0
        self._busy_streak = 0
        self._changed = asyncio.Event()

    @property
    def active(self) -> int:
        return self._active

    @property
    def queued(self) -> int:
        return len(self._queue)

    def enqueue(self, owner: int, job_id: str, *, front: bool = False) -> None:
        self._queue.push(owner, job_id, front=front)
        self._changed.set()

    def remove(self, job_id: str) -> bool:
        return self._queue.remove(job_id)

    def position(self, job_id: str) -> int | None:
        return self._queue.position(job_id)

    def occupy(self) -> Slot:
        """A slot for a task already active at the provider (recovered after a restart)."""
        self._active += 1
        return Slot(self)

    @property
    def limit(self) -> int:
        return self._limit

    def provider_busy(self, retry_after: float | None) -> None:
        """The provider answered 429 to a submit that holds a slot: shrink the limit to what the
        provider holds now and pause new submissions (jittered; growing if 429s persist)."""
        now = self._monotonic()
        if now >= self._paused_until:
            self._busy_streak += 1  # a new episode, not another answer from the same burst
        self._limit = max(1, self._active - 1)
        self._accepted_since_raise = 0
        backoff = min(30.0, 0.25 * 2 ** min(self._busy_streak - 1, 7))
        pause = retry_after if retry_after is not None else backoff * random.uniform(0.75, 1.25)
        self._paused_until = max(self._paused_until, now + pause)
        log.info("%s is at capacity (limit now %d); pausing %.2fs", self.name, self._limit, pause)

    def provider_accepted(self) -> None:
        self._busy_streak = 0
        if self._limit < self.max_active:
            self._accepted_since_raise += 1
            if self._accepted_since_raise >= self._limit:
                self._limit += 1
                self._accepted_since_raise = 0

    def _on_release(self) -> None:
        self._active -= 1
        self._changed.set()

    async def run(self) -> None:
        """Start queued jobs whenever a slot is free; runs until cancelled."""
        while True:
            pause = self._paused_until - self._monotonic()
            if pause > 0:
                await asyncio.sleep(pause)
                continue
            if self._queue and self._active < self._limit:
                job_id = self._queue.pop()
                self._active += 1
                self._start_job(job_id, Slot(self))
                continue
            self._changed.clear()
            await self._changed.wait()
