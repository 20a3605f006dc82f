"""How long members' data is kept, and the purge that enforces it (docs/privacy.md).

Once an hour, one process of the fleet (whichever claims the round in `app_state`) blanks
prompts, drops stored images, deletes finished jobs and old audit entries, and erases the data
of servers the bot left more than the grace period ago. Every change goes a batch at a time
(bot/privacy/batches.py) and is idempotent, so a round cut short is finished by the next one.
The ledger's rows are the money journal: they are never purged (they hold no prompt).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from bot.invalidation import Cache, announce
from bot.privacy.batches import (
    PROMPT_ACTIONS_SQL,
    PROMPT_REMOVED,
    blank_approval_prompts,
    blank_job_prompts,
    delete_jobs,
    deleting,
    in_batches,
    json_text,
    setting,
)
from bot.storage.db import Database, Tx
from bot.storage.rows import marks

if TYPE_CHECKING:
    from bot.settings import Settings

log = logging.getLogger(__name__)

DAY = 86400.0
PURGE_INTERVAL = 3600.0  # seconds between rounds
_ROUND_KEY = "privacy_purge_round"


@dataclass(frozen=True)
class RetentionPolicy:
    """Each in seconds; None keeps for ever."""

    prompts: float | None = None
    images: float | None = None
    finished_jobs: float | None = None
    audit: float | None = None
    departed_grace: float | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> RetentionPolicy:
        def seconds(days: float) -> float | None:
            return days * DAY if days > 0 else None

        return cls(
            prompts=seconds(settings.prompt_retention_days),
            images=seconds(settings.reference_retention_days),
            finished_jobs=seconds(settings.finished_job_retention_days),
            audit=seconds(settings.audit_retention_days),
            departed_grace=seconds(settings.departed_server_grace_days),
        )


@dataclass
class PurgeReport:
    """What one round changed, by kind (only kinds that changed something)."""

    counts: dict[str, int] = field(default_factory=dict)

    def add(self, kind: str, count: int) -> None:
        if count:
            self.counts[kind] = self.counts.get(kind, 0) + count


class Retention:
    def __init__(
        self,
        db: Database,
        policy: RetentionPolicy,
        *,
        clock: Callable[[], float],
        batch_size: int | None = None,
        on_server_erased: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self._db = db
        self.policy = policy
        self._clock = clock
        self._batch: dict[str, Any] = {} if batch_size is None else {"batch_size": batch_size}
        # Reloads this process's caches of server settings, terms and studios.
        self._on_server_erased = on_server_erased
        self.interval = PURGE_INTERVAL

    # ----------------------------------------------------------------- the round
    async def claim_round(self, now: float) -> bool:
        """Whether this process runs the round due now: the first to ask in each interval
        does (the others would only find nothing left to do)."""
        due = int(now - self.interval * 0.9)  # a little early, so rounds never skip one

        async def claim(tx: Tx) -> int:
            return await tx.execute(
                "INSERT INTO app_state (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE"
                " SET value = excluded.value WHERE CAST(app_state.value AS BIGINT) <= ?",
                (_ROUND_KEY, str(int(now)), due),
            )

        return bool(await self._db.run(claim))

    async def run_round(self) -> PurgeReport | None:
        """One round, if this process claims it (None if another has it)."""
        now = self._clock()
        if not await self.claim_round(now):
            return None
        report = await self.purge(now)
        if report.counts:
            summary = ", ".join(f"{count} {kind}" for kind, count in report.counts.items())
            log.info("privacy purge: %s", summary)
        return report

    async def purge(self, now: float) -> PurgeReport:
        """Everything due at `now` (whether or not this process claimed the round)."""
        report = PurgeReport()
        policy = self.policy
        if policy.prompts is not None:
            await self._purge_prompts(now - policy.prompts, now, report)
        if policy.images is not None:
            await self._purge_images(now - policy.images, report)
        if policy.finished_jobs is not None:
            await self._purge_jobs(now - policy.finished_jobs, report)
        if policy.audit is not None:
            await self._purge_audit(now - policy.audit, report)
        if policy.departed_grace is not None:
            for guild_id in await self.departed_before(now - policy.departed_grace):
                report.add("servers erased", 1)
                await self.erase_server(guild_id, report)
        return report

    # ----------------------------------------------------------------- by kind
    async def _batches(self, select: str, params: tuple[Any, ...], change: Any) -> int:
        return await in_batches(self._db, select, params, change, **self._batch)

    async def _purge_prompts(self, cutoff: float, now: float, report: PurgeReport) -> None:
        async def blank(tx: Tx, ids: list[Any]) -> int:
            return await blank_job_prompts(tx, ids, now)

        report.add(
            "job prompts blanked",
            await self._batches(
                "SELECT id FROM jobs WHERE closed = 1 AND prompt_removed_at IS NULL"
                " AND finished_at < ? ORDER BY finished_at",
                (cutoff,),
                blank,
            ),
        )
        report.add(
            "strike prompts blanked",
            await self._batches(
                "SELECT id FROM strikes WHERE at < ? AND prompt <> ?",
                (cutoff, PROMPT_REMOVED),
                setting("strikes", "id", f"prompt = '{PROMPT_REMOVED}'"),
            ),
        )
        report.add(
            "audit prompts blanked",
            await self._batches(
                # The index's own condition first (audit_text_kept), then the actions.
                f"SELECT id FROM audit_log WHERE detail <> '{PROMPT_REMOVED}' AND at < ?"
                f" AND {PROMPT_ACTIONS_SQL} ORDER BY at",
                (cutoff,),
                setting("audit_log", "id", f"detail = '{PROMPT_REMOVED}'"),
            ),
        )
        prompt = json_text(self._db.backend, "request", "params", "prompt")
        report.add(
            "approval prompts blanked",
            await self._batches(
                f"SELECT id FROM approvals WHERE state <> 'pending' AND created_at < ?"
                f" AND {prompt} <> ''",
                (cutoff,),
                blank_approval_prompts,
            ),
        )

    async def _purge_images(self, cutoff: float, report: PurgeReport) -> None:
        # (A finished job's references: the engine's own purge, bot/jobs/engine.py.) Results
        # are dropped once posted; these are the ones that never were.
        report.add(
            "unposted results deleted",
            await self._batches(
                "SELECT DISTINCT job_id FROM job_outputs WHERE job_id IN"
                " (SELECT id FROM jobs WHERE closed = 1 AND finished_at < ?)",
                (cutoff,),
                deleting("job_outputs", "job_id"),
            ),
        )
        report.add(
            "approval images deleted",
            await self._batches(
                "SELECT DISTINCT approval_id FROM approval_inputs WHERE approval_id IN"
                " (SELECT id FROM approvals WHERE state <> 'pending' AND created_at < ?)",
                (cutoff,),
                deleting("approval_inputs", "approval_id"),
            ),
        )

    async def _purge_jobs(self, cutoff: float, report: PurgeReport) -> None:
        report.add(
            "finished jobs deleted",
            await self._batches(
                "SELECT id FROM jobs WHERE closed = 1 AND finished_at < ? ORDER BY finished_at",
                (cutoff,),
                delete_jobs,
            ),
        )
        report.add(
            "decided approvals deleted",
            await self._batches(
                "SELECT id FROM approvals WHERE state <> 'pending' AND created_at < ?",
                (cutoff,),
                deleting("approvals", "id"),
            ),
        )

    async def _purge_audit(self, cutoff: float, report: PurgeReport) -> None:
        for table in ("audit_log", "quota_audit"):
            report.add(
                f"{table} entries deleted",
                await self._batches(
                    f"SELECT id FROM {table} WHERE at < ? ORDER BY at",
                    (cutoff,),
                    deleting(table, "id"),
                ),
            )

    # ----------------------------------------------------------------- servers left
    async def left(self, guild_id: int) -> None:
        """The bot left (or was removed from) the server: its data goes after the grace
        period, unless the bot is back by then. A second departure keeps the first time."""
        await self._db.execute(
            "INSERT INTO server_departures (guild_id, left_at) VALUES (?, ?)"
            " ON CONFLICT (guild_id) DO NOTHING",
            (guild_id, self._clock()),
        )

    async def present(self, guild_ids: list[int]) -> int:
        """The bot is in these servers (it joined again, or saw them on connecting): nothing
        of theirs is erased. Returns the departures cancelled."""
        cancelled = 0
        for start in range(0, len(guild_ids), 500):
            chunk = guild_ids[start : start + 500]
            cancelled += await self._db.execute(
                f"DELETE FROM server_departures WHERE guild_id IN ({marks(chunk)})", chunk
            )
        return cancelled

    async def departed_before(self, cutoff: float) -> list[int]:
        rows = await self._db.fetch_all(
            "SELECT guild_id FROM server_departures WHERE left_at < ? ORDER BY left_at",
            (cutoff,),
        )
        return [int(row[0]) for row in rows]

    async def erase_server(self, guild_id: int, report: PurgeReport | None = None) -> None:
        """Erase a departed server's data. The ledger and its running totals (amounts, member
        ids, no prompt) stay: they are the accounting record, and the bot-wide monthly budget
        counts them. Jobs still
        open are left to finish. The departure is forgotten last, so an erasure cut short
        resumes; one whose server came back in the meantime stops at the next batch."""
        report = report or PurgeReport()

        still_gone = "AND EXISTS (SELECT 1 FROM server_departures WHERE guild_id = ?)"

        # Big tables a batch at a time; a batch checks the server is still gone.
        batched = (
            ("jobs", "id", "closed = 1", delete_jobs),
            ("audit_log", "id", "TRUE", deleting("audit_log", "id")),
            ("strikes", "id", "TRUE", deleting("strikes", "id")),
            ("approvals", "id", "TRUE", deleting("approvals", "id")),
            ("server_members", "user_id", "TRUE", None),
            ("blocks", "user_id", "TRUE", None),
            ("quota_grants", "id", "TRUE", deleting("quota_grants", "id")),
            ("quota_audit", "id", "TRUE", deleting("quota_audit", "id")),
            ("banned_terms", "id", "TRUE", deleting("banned_terms", "id")),
            ("studios", "thread_id", "TRUE", deleting("studios", "thread_id")),
        )
        for table, key, condition, change in batched:
            if change is None:  # keyed by (guild_id, user_id)
                change = _deleting_members_of(table, guild_id)
            report.add(
                f"{table} rows of departed servers",
                await self._batches(
                    f"SELECT {key} FROM {table} WHERE guild_id = ? AND {condition} {still_gone}",
                    (guild_id, guild_id),
                    change,
                ),
            )

        async def finish(tx: Tx) -> None:
            if not await tx.fetch_value(
                "SELECT 1 FROM server_departures WHERE guild_id = ?", (guild_id,)
            ):
                return
            for table in ("guild_settings", "quota_limits", "server_loras"):
                await tx.execute(f"DELETE FROM {table} WHERE guild_id = ?", (guild_id,))
            await tx.execute("DELETE FROM server_departures WHERE guild_id = ?", (guild_id,))
            # Every process reloads its settings, terms and studios (bot/invalidation.py).
            for cache in Cache:
                await announce(tx, cache)

        await self._db.run(finish)
        log.info("erased the data of server %s, which the bot left", guild_id)
        if self._on_server_erased is not None:
            await self._on_server_erased()


def _deleting_members_of(table: str, guild_id: int) -> Any:
    async def delete(tx: Tx, user_ids: list[Any]) -> int:
        return await tx.execute(
            f"DELETE FROM {table} WHERE guild_id = ? AND user_id IN ({marks(user_ids)})",
            (guild_id, *user_ids),
        )

    return delete
