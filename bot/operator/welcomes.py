"""The setup note a server gets when the bot joins it: once per server, ever.

Discord delivers GUILD_CREATE again after an outage or a reconnect, and every process
restart sees every server anew, so "once" is remembered in the store (`guild_welcomes`):
the note is claimed in one statement before it is sent, whichever process or event comes
first, and the claim is given back only if the note could be posted nowhere."""

from __future__ import annotations

import time
from collections.abc import Callable

from bot.storage.db import Database


class Welcomes:
    def __init__(self, db: Database, *, clock: Callable[[], float] = time.time) -> None:
        self._db = db
        self._clock = clock

    async def claim(self, guild_id: int) -> bool:
        """True if this server was never welcomed: the caller sends the note now."""
        inserted = await self._db.execute(
            "INSERT INTO guild_welcomes (guild_id, sent_at) VALUES (?, ?)"
            " ON CONFLICT (guild_id) DO NOTHING",
            (guild_id, self._clock()),
        )
        return bool(inserted)

    async def sent(self, guild_id: int, channel_id: int) -> None:
        """Where the note went (a channel, or the owner's direct messages)."""
        await self._db.execute(
            "UPDATE guild_welcomes SET channel_id = ? WHERE guild_id = ?", (channel_id, guild_id)
        )

    async def release(self, guild_id: int) -> None:
        """The note could be posted nowhere: a later join may try again."""
        await self._db.execute("DELETE FROM guild_welcomes WHERE guild_id = ?", (guild_id,))
