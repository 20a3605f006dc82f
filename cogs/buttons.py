"""The shape every persistent button shares: a `DynamicItem` whose custom_id carries what it
acts on (so it keeps working after a restart), and whose failures get a private answer."""

from __future__ import annotations

import logging
import re
from typing import Any, Self, cast

import discord

from bot.errors import INTERNAL_ERROR_TEXT, InvalidRequest
from cogs.flow import reply_privately

log = logging.getLogger(__name__)

# A button whose job is gone (purged, or never ours).
UNKNOWN_JOB_TEXT = "I don't know this image any more, so I can't do that."
# The answer to a paid result button pressed within the member's cooldown.
COOLDOWN_TEXT = "Slow down a little: you can use these buttons again in {seconds} s."


class PersistentButton(
    discord.ui.DynamicItem[discord.ui.Button[discord.ui.View]],
    # discord.py wants a template on every subclass; this base is never registered, and its
    # subclasses give their own.
    template=r"(?!)",
):
    """Subclasses give their `template` and `_run`. The template's named groups are the
    arguments of the subclass's constructor (`from_match` converts them otherwise). A refusal
    raised by `_run` (InvalidRequest) is shown to the clicker; anything else is logged and
    answered with the usual apology."""

    @classmethod
    async def from_custom_id(
        cls,
        interaction: discord.Interaction[Any],
        item: discord.ui.Item[Any],
        match: re.Match[str],
    ) -> Self:
        return cls.from_match(match)

    @classmethod
    def from_match(cls, match: re.Match[str]) -> Self:
        button: Self = cast(Any, cls)(**match.groupdict())
        return button

    async def callback(self, interaction: discord.Interaction[Any]) -> None:
        try:
            await self._run(interaction)
        except InvalidRequest as exc:
            await reply_privately(interaction, str(exc))
        except Exception:
            log.exception("button %s failed", self.custom_id)
            await reply_privately(interaction, INTERNAL_ERROR_TEXT)

    async def _run(self, interaction: discord.Interaction[Any]) -> None:
        raise NotImplementedError
