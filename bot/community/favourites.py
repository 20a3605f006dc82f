"""Members' favourite results (the ⭐ button, /favourites) and the server's showcase (Share).

Favourites are a member's own, across servers; which of them a listing shows depends on
where it is asked (`Scope`): in a server, that server's results; in direct messages, all of
the member's favourites. Another member's direct-message result is never shown to anyone but
its requester (it can only be favourited from that conversation, and listings check again).

A result is shared to the showcase once. The row is claimed in the database before anything
is posted, so a double click or a second process finds the claim and does not post again; a
claim whose process died before posting (no message id after `CLAIM_SECONDS`) may be taken
over, so a crash never blocks sharing for ever.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from bot.errors import InvalidRequest
from bot.jobs.models import Job
from bot.jobs.store import job_from_row
from bot.servers.audit import AuditLog
from bot.storage.db import Database, Tx
from bot.text import plural

PAGE_SIZE = 10
# A member's favourites are bounded, so a listing (and the export) stays small.
MAX_FAVOURITES = 1000
# A showcase claim without a posted message for this long is taken to be a crashed process's:
# well beyond how long one post may take (SHOWCASE_POST_SECONDS in cogs/favourites.py).
CLAIM_SECONDS = 300.0
SHOWCASE_ACTION = "showcase"
TOO_MANY_TEXT = (
    f"You already keep {plural(MAX_FAVOURITES, 'favourite')}, the most one member can. "
    "Remove some with their ⭐ button first."
)


@dataclass(frozen=True)
class Scope:
    """Where a listing is asked: in a server (its results), or in direct messages (None:
    every favourite of the member)."""

    user_id: int
    guild_id: int | None


@dataclass(frozen=True)
class FavouritePage:
    jobs: list[Job]
    page: int  # from 0
    pages: int  # at least 1
    total: int


@dataclass(frozen=True)
class Claim:
    """This process may post the job to the showcase channel (then `posted` or `release`)."""

    job_id: str
    channel_id: int
    claimed_at: float


@dataclass(frozen=True)
class AlreadyShared:
    """It is in the showcase already (`message_id`), or being posted right now (None)."""

    channel_id: int
    message_id: int | None


class Favourites:
    def __init__(self, db: Database, *, clock: Callable[[], float] = time.time) -> None:
        self._db = db
        self._clock = clock

    async def toggle(self, user_id: int, job: Job) -> bool:
        """Keep `job` in the member's favourites, or remove it if it was there. True: it is
        a favourite now. Raises InvalidRequest at MAX_FAVOURITES."""
        now = self._clock()

        async def flip(tx: Tx) -> bool:
            removed = await tx.execute(
                "DELETE FROM favourites WHERE user_id = ? AND job_id = ?", (user_id, job.id)
            )
            if removed:
                return False
            count = await tx.fetch_value(
                "SELECT count(*) FROM favourites WHERE user_id = ?", (user_id,)
            )
            if int(count) >= MAX_FAVOURITES:
                raise InvalidRequest(TOO_MANY_TEXT)
            # A second click racing this one may have added it meanwhile: then it stays.
            await tx.execute(
                "INSERT INTO favourites (user_id, job_id, created_at) VALUES (?, ?, ?)"
                " ON CONFLICT (user_id, job_id) DO NOTHING",
                (user_id, job.id, now),
            )
            return True

        return await self._db.run(flip)

    async def page(self, scope: Scope, page: int) -> FavouritePage:
        """One page of the member's favourites seen from `scope`, newest favourite first. A
        page past the end shows the last one."""
        where, params = _visible(scope)
        total = int(
            await self._db.fetch_value(
                f"SELECT count(*) FROM favourites f JOIN jobs j ON j.id = f.job_id WHERE {where}",
                params,
            )
        )
        pages = max(1, -(-total // PAGE_SIZE))
        page = min(max(page, 0), pages - 1)
        rows = await self._db.fetch_all(
            f"SELECT j.* FROM favourites f JOIN jobs j ON j.id = f.job_id WHERE {where}"
            " ORDER BY f.created_at DESC, f.job_id DESC LIMIT ? OFFSET ?",
            (*params, PAGE_SIZE, page * PAGE_SIZE),
        )
        return FavouritePage([job_from_row(row) for row in rows], page, pages, total)


def _visible(scope: Scope) -> tuple[str, tuple[int, ...]]:
    """The favourites a listing in `scope` shows: that server's results, or (in direct
    messages) every server's and the member's own direct-message results."""
    if scope.guild_id is None:
        return (
            "f.user_id = ? AND (j.guild_id IS NOT NULL OR j.user_id = ?)",
            (scope.user_id, scope.user_id),
        )
    return "f.user_id = ? AND j.guild_id = ?", (scope.user_id, scope.guild_id)


class Showcase:
    def __init__(
        self, db: Database, audit: AuditLog, *, clock: Callable[[], float] = time.time
    ) -> None:
        self._db = db
        self._audit = audit
        self._clock = clock

    async def claim(self, job: Job, channel_id: int, actor_id: int) -> Claim | AlreadyShared:
        """Claim the right to post `job` in `channel_id`, or say where it already is. A stale
        claim (its process gone before posting) is taken over."""
        if job.guild_id is None:
            raise ValueError("only a server's results are shared")
        now = self._clock()

        async def take(tx: Tx) -> Claim | AlreadyShared:
            taken = await tx.execute(
                "INSERT INTO showcase_posts (job_id, guild_id, channel_id, shared_by, claimed_at)"
                " VALUES (?, ?, ?, ?, ?) ON CONFLICT (job_id) DO UPDATE SET"
                " channel_id = excluded.channel_id, shared_by = excluded.shared_by,"
                " claimed_at = excluded.claimed_at"
                " WHERE showcase_posts.message_id IS NULL AND showcase_posts.claimed_at < ?",
                (job.id, job.guild_id, channel_id, actor_id, now, now - CLAIM_SECONDS),
            )
            if taken:
                return Claim(job.id, channel_id, now)
            row = await tx.fetch_one(
                "SELECT channel_id, message_id FROM showcase_posts WHERE job_id = ?", (job.id,)
            )
            assert row is not None  # the insert found it
            return AlreadyShared(int(row["channel_id"]), row["message_id"])

        return await self._db.run(take)

    async def posted(self, claim: Claim, job: Job, actor_id: int, message_id: int) -> None:
        """The post is up: record it with its audit entry (one transaction)."""
        assert job.guild_id is not None
        link = f"https://discord.com/channels/{job.guild_id}/{claim.channel_id}/{message_id}"
        # No prompt in the entry: it stays accurate after the prompt's retention.
        entry = self._audit.entry(
            job.guild_id,
            actor_id,
            SHOWCASE_ACTION,
            f"<@{job.user_id}>'s image ({job.id}) shared in <#{claim.channel_id}>: {link}",
            target_id=job.user_id,
            job_id=job.id,
        )

        async def record(tx: Tx) -> None:
            await tx.execute(
                "UPDATE showcase_posts SET message_id = ?, posted_at = ?"
                " WHERE job_id = ? AND claimed_at = ? AND message_id IS NULL",
                (message_id, self._clock(), claim.job_id, claim.claimed_at),
            )
            await self._audit.write(tx, entry)

        await self._db.run(record)
        await self._audit.publish(entry)

    async def release(self, claim: Claim) -> None:
        """The post failed: whoever clicks next may share it."""
        await self._db.execute(
            "DELETE FROM showcase_posts WHERE job_id = ? AND claimed_at = ? AND message_id IS NULL",
            (claim.job_id, claim.claimed_at),
        )
