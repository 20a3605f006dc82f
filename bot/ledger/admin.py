"""Moderators' changes to the allowances: overrides, grants and resets, and their history.

Every change is written, in its own transaction, to three places that cannot disagree: the
allowance tables the quotas read, the quota history (`quota_audit`: scope, window, kind,
before and after, which `/quota show` lists), and the server's one audit log
(`bot.servers.audit`), which posts it to the audit channel once the transaction is done.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from bot.errors import InvalidRequest
from bot.ledger.policy import (
    MAX_AMOUNT,
    LimitKey,
    Limits,
    Metric,
    QuotaPolicy,
    Scope,
    format_amount,
)
from bot.periods import PERIODS, Period, format_reset
from bot.servers.audit import AuditEntry, AuditLog
from bot.storage.db import Database, Tx
from bot.storage.rows import from_row
from bot.text import plural

__all__ = ["Change", "Override", "QuotaAdmin", "describe_limit", "describe_target"]


@dataclass(frozen=True)
class Override:
    """A moderator's limit for one member, role or the server, in one window and unit."""

    scope: Scope
    target_id: int
    period: Period
    metric: Metric
    amount: int | None  # images or millicredits; None: unlimited
    updated_at: float
    updated_by: int


@dataclass(frozen=True)
class Change:
    """A moderator's change, as recorded: what `/quota` answers (`summary`) and lists."""

    at: float
    guild_id: int
    actor_id: int
    action: str  # set, grant or reset
    scope: Scope
    target_id: int
    period: Period | None  # None for a reset (every window)
    metric: Metric | None
    before: str | None
    after: str | None
    summary: str


def describe_limit(metric: Metric, amount: int | None) -> str:
    return "unlimited" if amount is None else format_amount(metric, amount)


def describe_target(scope: Scope, target_id: int, guild_id: int) -> str:
    if scope is Scope.USER:
        return f"<@{target_id}>"
    if scope is Scope.ROLE:
        return "@everyone" if target_id == guild_id else f"<@&{target_id}>"
    return "the server"


def _allowance_name(
    scope: Scope, target_id: int, guild_id: int, period: Period, metric: Metric
) -> str:
    kind = f"{period.adjective} {metric.singular}"
    if scope is Scope.GUILD:
        return f"this server's {kind} budget"
    if scope is Scope.ROLE:
        role = describe_target(scope, target_id, guild_id)
        return f"the {kind} allowance for members with {role}"
    return f"the {kind} allowance of <@{target_id}>"


class QuotaAdmin:
    def __init__(
        self,
        db: Database,
        policy: QuotaPolicy,
        audit: AuditLog,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.db = db
        self.policy = policy
        self._audit = audit
        self._clock = clock

    async def overrides(self, guild_id: int) -> list[Override]:
        """Every moderator's limit on a server, by scope, target, window and unit."""
        rows = await self.db.fetch_all(
            "SELECT * FROM quota_limits WHERE guild_id = ? ORDER BY scope, target_id, period,"
            " metric",
            (guild_id,),
        )
        return [from_row(Override, r, scope=Scope, period=Period, metric=Metric) for r in rows]

    async def history(self, guild_id: int, limit: int = 10) -> list[Change]:
        """The latest moderator changes on a server, newest first."""
        rows = await self.db.fetch_all(
            "SELECT * FROM quota_audit WHERE guild_id = ? ORDER BY at DESC, id DESC LIMIT ?",
            (guild_id, limit),
        )
        return [from_row(Change, r, scope=Scope, period=Period, metric=Metric) for r in rows]

    def _default(self, scope: Scope, key: LimitKey) -> str:
        if scope is Scope.ROLE:
            return "no limit from this role"
        limits: Limits = self.policy.user if scope is Scope.USER else self.policy.guild
        return f"{describe_limit(key[1], limits[key])}, the default"

    async def set_limit(
        self,
        guild_id: int,
        actor_id: int,
        scope: Scope,
        target_id: int,
        period: Period,
        metric: Metric,
        amount: int | None,
    ) -> Change:
        """Override one allowance (images, or millicredits; None = unlimited) for a member,
        a role or the whole server, and audit it.

        Raises:
            InvalidRequest: the amount is negative or absurdly large; nothing was changed.
        """
        if amount is not None and not 0 <= amount <= MAX_AMOUNT:
            raise InvalidRequest("The amount must be 0 or more (or -1 for unlimited).")
        target = guild_id if scope is Scope.GUILD else target_id
        now = self._clock()

        async def body(tx: Tx) -> Change:
            row = await tx.fetch_one(
                "SELECT amount FROM quota_limits WHERE guild_id = ? AND scope = ?"
                " AND target_id = ? AND period = ? AND metric = ?",
                (guild_id, scope.value, target, period.value, metric.value),
            )
            before = (
                describe_limit(metric, row["amount"])
                if row is not None
                else self._default(scope, (period, metric))
            )
            after = describe_limit(metric, amount)
            await tx.execute(
                "INSERT INTO quota_limits (guild_id, scope, target_id, period, metric, amount,"
                " updated_at, updated_by) VALUES (?,?,?,?,?,?,?,?)"
                " ON CONFLICT (guild_id, scope, target_id, period, metric) DO UPDATE SET"
                " amount = excluded.amount, updated_at = excluded.updated_at,"
                " updated_by = excluded.updated_by",
                (guild_id, scope.value, target, period.value, metric.value, amount, now, actor_id),
            )
            summary = (
                f"Set {_allowance_name(scope, target, guild_id, period, metric)} to {after}"
                f" (was {before})."
            )
            return Change(
                now, guild_id, actor_id, "set", scope, target, period, metric, before, after,
                summary,
            )  # fmt: skip

        return await self._record(body)

    async def grant(
        self,
        guild_id: int,
        actor_id: int,
        user_id: int,
        period: Period,
        metric: Metric,
        amount: int,
    ) -> Change:
        """Give one member extra allowance (images, or millicredits) for the current window
        only, and audit it.

        Raises:
            InvalidRequest: the amount is 0 or less, or absurdly large; nothing was given.
        """
        if not 0 < amount <= MAX_AMOUNT:
            raise InvalidRequest("A grant must be more than 0.")
        now = self._clock()
        start = self.policy.schedule.start(period, now)
        ends = self.policy.schedule.end(period, now)
        given = format_amount(metric, amount)
        summary = (
            f"Gave <@{user_id}> {given} more {period.current}; the extra lapses at the reset "
            f"{format_reset(ends)}."
        )

        async def body(tx: Tx) -> Change:
            await tx.execute(
                "INSERT INTO quota_grants (guild_id, user_id, period, period_start, metric,"
                " amount, granted_at, granted_by) VALUES (?,?,?,?,?,?,?,?)",
                (guild_id, user_id, period.value, start, metric.value, amount, now, actor_id),
            )
            return Change(
                now, guild_id, actor_id, "grant", Scope.USER, user_id, period, metric, None,
                f"+{given}", summary,
            )  # fmt: skip

        return await self._record(body)

    async def reset(self, guild_id: int, actor_id: int, scope: Scope, target_id: int) -> Change:
        """Drop every override for a member, role or the server (and a member's grants for
        the current windows): they are back on the defaults. Audited even when there was
        nothing to drop."""
        target = guild_id if scope is Scope.GUILD else target_id
        now = self._clock()
        who = describe_target(scope, target, guild_id)

        async def body(tx: Tx) -> Change:
            removed = await tx.execute(
                "DELETE FROM quota_limits WHERE guild_id = ? AND scope = ? AND target_id = ?",
                (guild_id, scope.value, target),
            )
            grants = 0
            if scope is Scope.USER:
                starts = self.policy.schedule.starts(now)
                grants = await tx.execute(
                    "DELETE FROM quota_grants WHERE guild_id = ? AND user_id = ? AND ("
                    + " OR ".join("(period = ? AND period_start >= ?)" for _ in PERIODS)
                    + ")",
                    (
                        guild_id,
                        target,
                        *(value for p in PERIODS for value in (p.value, starts[p])),
                    ),
                )
            if removed or grants:
                parts = [plural(removed, "override")] if removed else []
                parts += [plural(grants, "grant")] if grants else []
                summary = f"Reset {who} to the defaults: removed {' and '.join(parts)}."
            else:
                summary = f"Nothing to reset: {who} already has the defaults."
            return Change(
                now, guild_id, actor_id, "reset", scope, target, None, None,
                f"{removed} overrides, {grants} grants", "defaults", summary,
            )  # fmt: skip

        return await self._record(body)

    async def _record(self, change_in: Callable[[Tx], Awaitable[Change]]) -> Change:
        """Run a change and write it to the quota history and the audit log in the same
        transaction; then post it to the server's audit channel."""

        async def transaction(tx: Tx) -> tuple[Change, AuditEntry]:
            change = await change_in(tx)
            await _write_history(tx, change)
            entry = _audit_entry(change)
            await AuditLog.write(tx, entry)
            return change, entry

        change, entry = await self.db.run(transaction)
        await self._audit.publish(entry)
        return change


def _audit_entry(change: Change) -> AuditEntry:
    # Quota changes about a member (or a role) are filed under them, as /mod why reads it.
    target = None if change.scope is Scope.GUILD else change.target_id
    return AuditEntry(
        change.at, change.guild_id, change.actor_id, f"quota {change.action}", change.summary,
        target_id=target,
    )  # fmt: skip


async def _write_history(tx: Tx, change: Change) -> None:
    await tx.execute(
        "INSERT INTO quota_audit (at, guild_id, actor_id, action, scope, target_id, period,"
        " metric, before, after, summary) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
        (
            change.at,
            change.guild_id,
            change.actor_id,
            change.action,
            change.scope.value,
            change.target_id,
            change.period and change.period.value,
            change.metric and change.metric.value,
            change.before,
            change.after,
            change.summary,
        ),
    )
