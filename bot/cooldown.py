"""A per-member pause between requests (commands, replies and result buttons), in memory."""

from __future__ import annotations

import math
import time
from collections.abc import Callable

# Past this many remembered members, the ones whose pause is over are forgotten.
_PRUNE_AT = 1024


class Cooldown:
    """At most one action per `seconds` per member. In memory only: a restart forgives."""

    def __init__(self, seconds: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.seconds = seconds
        self._clock = clock
        self._last: dict[int, float] = {}

    def retry_after(self, user_id: int) -> float:
        """0 when the member may act now (the action is then counted), else the seconds
        left (a refused attempt does not restart the pause)."""
        if self.seconds <= 0:
            return 0.0
        now = self._clock()
        last = self._last.get(user_id)
        if last is not None and now - last < self.seconds:
            return self.seconds - (now - last)
        if len(self._last) >= _PRUNE_AT:
            self._last = {u: t for u, t in self._last.items() if now - t < self.seconds}
        self._last[user_id] = now
        return 0.0

    def wait_seconds(self, user_id: int) -> int:
        """`retry_after` in whole seconds to tell the member: 0 when they may act now (the
        action is then counted), else at least 1."""
        wait = self.retry_after(user_id)
        return max(1, math.ceil(wait)) if wait > 0 else 0
