"""The servers the bot is in, with what each spent this month, for the owner."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from bot.ledger.reports import Total


@dataclass(frozen=True)
class ServerSpend:
    guild_id: int
    name: str
    credits_mc: int  # this month's window: charged, plus held by jobs still running
    images: int


def servers_by_spend(
    servers: Iterable[tuple[int, str]], spend: Mapping[int, Total]
) -> list[ServerSpend]:
    """Each server (id, name) with its month's spend, the biggest spender first (then by
    name): servers that spent nothing are listed too, last."""
    rows = []
    for guild_id, name in servers:
        total = spend.get(guild_id)
        rows.append(
            ServerSpend(
                guild_id,
                name,
                total.credits_mc if total else 0,
                total.images if total else 0,
            )
        )
    return sorted(rows, key=lambda row: (-row.credits_mc, -row.images, row.name.lower()))
