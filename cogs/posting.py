"""Side posts: audit entries, public refusals, review requests. They wait for their turn in
the channel (bot/outbox.py) behind nobody's interaction, and are retried through transient
trouble instead of being lost."""

from __future__ import annotations

import asyncio
import logging
import random
from typing import Any

import discord

from bot.outbox import ChannelTurns

log = logging.getLogger(__name__)

# Side posts (audit entries, refusals in reply to a message): attempts through transient
# trouble before one is given up and logged.
SIDE_POST_ATTEMPTS = 6


class ChannelPoster:
    """Side posts (audit entries, public refusals, review requests): they wait for their
    turn in the channel behind nobody's interaction, and are retried through transient
    trouble (discord.py itself waits out 429s) instead of being lost."""

    def __init__(self, client: discord.Client, turns: ChannelTurns) -> None:
        self._client = client
        self._turns = turns
        self._tasks: set[asyncio.Task[Any]] = set()
        self._sequence = 0

    async def send(
        self, channel_id: int, *, guild_id: int | None = None, **kwargs: Any
    ) -> discord.Message:
        """Post now (in the channel's turn) and return the message; raises on failure."""
        self._sequence += 1
        channel = self._client.get_partial_messageable(channel_id, guild_id=guild_id)
        async with self._turns[channel_id].turn(("side", self._sequence), urgent=True):
            return await channel.send(**kwargs)

    def send_soon(
        self,
        channel_id: int,
        *,
        guild_id: int | None = None,
        delete_after: float | None = None,
        **kwargs: Any,
    ) -> None:
        """Post in the background; nothing waits for it."""

        async def post() -> None:
            for attempt in range(1, SIDE_POST_ATTEMPTS + 1):
                try:
                    message = await self.send(channel_id, guild_id=guild_id, **kwargs)
                except (discord.Forbidden, discord.NotFound):
                    log.warning("cannot post in channel %s", channel_id)
                    return
                except (discord.HTTPException, OSError) as exc:
                    # Network trouble and Discord's 5xx may pass; any other refusal won't.
                    refused = isinstance(exc, discord.HTTPException) and exc.status < 500
                    if refused or attempt == SIDE_POST_ATTEMPTS:
                        log.warning("a post in channel %s failed", channel_id, exc_info=True)
                        return
                else:
                    if delete_after is not None:
                        await message.delete(delay=delete_after)
                    return
                await asyncio.sleep(min(30.0, 2.0**attempt) * random.uniform(0.8, 1.2))

        task = asyncio.create_task(post(), name=f"post-{channel_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def drain(self, within: float = 5.0) -> None:
        """Let the posts already queued go out (at shutdown)."""
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=within)
