"""Discord's hidden shared limit on webhook messages per channel, seen from discord.py.

About 30 webhook messages per minute per channel, for everyone sending there (staff in
discord-api-docs #367; #1454, #4043 and #3763 describe its 429: `X-RateLimit-Scope: shared`,
`retry_after` some 40 s, bucket headers that still show the per-token bucket). discord.py's
webhook adapter sleeps such a `retry_after` inside the request and retries up to five times
before raising HTTPException(429). `SharedLimitWatch.trace`, given to the client as its
`http_trace`, sees every answer: a shared-scope 429 pauses its channel, and inside
`handling(channel)` it is raised as SharedLimited instead, so the caller (cogs/delivery.py)
decides how to wait. Elsewhere discord.py's own sleep-and-retry stays.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from typing import Any

import aiohttp

from bot.outbox import SharedLimits


class SharedLimited(Exception):
    """Discord answered 429 for a limit shared by everyone in the channel: come back in
    `retry_after` seconds (raised instead of discord.py's sleep, see SharedLimitWatch)."""

    def __init__(self, retry_after: float) -> None:
        super().__init__(f"shared rate limit: retry after {retry_after:.3f}s")
        self.retry_after = retry_after


# The channel whose shared limit the current task's Discord requests count against, while
# the caller handles a shared 429 itself; elsewhere discord.py sleeps and retries as usual.
_HANDLING_SHARED: ContextVar[int | None] = ContextVar("handling_shared_limit", default=None)
# When Discord's 429 says neither (it always does): about what its shared limit asks for.
DEFAULT_SHARED_RETRY_AFTER = 40.0


class SharedLimitWatch:
    """Sees every answer Discord gives the client (`trace` is passed as discord.py's
    `http_trace`): a shared-scope 429 pauses its channel in `limits`, and, inside
    `handling(channel)`, is raised as SharedLimited out of discord.py's retry loop."""

    def __init__(self, limits: SharedLimits | None = None) -> None:
        self.limits = limits or SharedLimits()
        #: Called at each shared-scope 429 (the bot counts them).
        self.on_limited: Callable[[], None] = lambda: None
        self.trace = aiohttp.TraceConfig()
        self.trace.on_request_end.append(self._on_request_end)

    @contextlib.contextmanager
    def handling(self, channel_id: int) -> Iterator[None]:
        token = _HANDLING_SHARED.set(channel_id)
        try:
            yield
        finally:
            _HANDLING_SHARED.reset(token)

    async def _on_request_end(
        self,
        session: aiohttp.ClientSession,
        context: Any,
        params: aiohttp.TraceRequestEndParams,
    ) -> None:
        response = params.response
        if response.status != 429 or response.headers.get("X-RateLimit-Scope") != "shared":
            return
        self.on_limited()
        channel_id = _HANDLING_SHARED.get()
        if channel_id is None:
            return  # not ours to handle: discord.py sleeps `retry_after` and tries again
        retry_after = await _retry_after(response)
        self.limits.pause(channel_id, retry_after)
        # aiohttp closes the response and the exception leaves discord.py's request (which
        # retries only OSErrors), releasing its locks on the way.
        raise SharedLimited(retry_after)


async def _retry_after(response: aiohttp.ClientResponse) -> float:
    """The body's precise `retry_after`, else the whole seconds of `Retry-After`."""
    with contextlib.suppress(Exception):
        body = await response.json(content_type=None)
        return max(0.0, float(body["retry_after"]))
    with contextlib.suppress(TypeError, ValueError):
        return max(0.0, float(response.headers.get("Retry-After", "")))
    return DEFAULT_SHARED_RETRY_AFTER
