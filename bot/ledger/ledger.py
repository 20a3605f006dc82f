"""Quotas and exact usage accounting in SQLite.

Every job reserves its estimated cost (and its images) in the transaction that creates it;
the job's final state change settles the reservation in *its* transaction: a charge of the
provider's real cost once the image exists, a full refund otherwise. Settlement is a
compare-and-set on the ledger row's status, so it happens at most once per job, whatever
restarts or races occur.

Three levels of allowance all apply to a request, each over a day, a week and a month, in
images and in credits:

* the member's own allowance (a moderator's override for them, else the bot default);
* the allowance of their roles: a per-member limit that comes with a role, the most generous
  of their roles that has one (roles without an allowance are ignored, so a member with no
  such role has no role limit);
* the server's total budget (a moderator's override, else the bot default).

Grants (extra images or credits for one member in the current window) raise the two
per-member levels; the server budget is never raised by them.
"""

from __future__ import annotations

import math
import sqlite3
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, NamedTuple

import aiosqlite

from bot.errors import InvalidCharge, InvalidRequest
from bot.ledger.policy import (
    METRICS,
    LimitKey,
    Limits,
    Metric,
    QuotaPolicy,
    Scope,
    credits_to_mc,
    format_amount,
)
from bot.periods import PERIODS, Period, format_reset
from bot.storage.db import Database
from bot.text import plural

# The order levels are named in when two breached limits reset at the same moment.
_LEVEL_ORDER = {Scope.USER: 0, Scope.ROLE: 1, Scope.GUILD: 2}
# Largest amount a moderator may set: far beyond any real budget, far below SQLite's limit.
MAX_AMOUNT = 10**12


def guild_key(guild_id: int | None) -> int:
    """Direct messages have no server; the ledger files them under 0."""
    return guild_id or 0


# --------------------------------------------------------------------------- refusals
@dataclass(frozen=True)
class Breach:
    """One limit a request would go over, with what is left at that level."""

    guild_id: int
    scope: Scope
    role_id: int | None
    period: Period
    metric: Metric
    limit: int  # the level's limit for this window (before grants)
    remaining: Mapping[Metric, int | None]  # left at this level this window (None: no limit)
    need: Mapping[Metric, int]
    resets_at: int

    def subject(self) -> str:
        kind = f"{self.period.adjective} {self.metric.singular}"
        if self.scope is Scope.USER:
            return f"your {kind} allowance"
        if self.scope is Scope.ROLE:
            if self.role_id == self.guild_id:  # @everyone shares the server's id
                return f"the {kind} allowance for everyone on this server"
            return f"the {kind} allowance for your role <@&{self.role_id}>"
        return f"this server's {kind} budget"

    def message(self) -> str:
        limit = f"{format_amount(self.metric, self.limit)} a {self.period.value}"
        left = " and ".join(
            format_amount(metric, amount)
            for metric in METRICS
            if (amount := self.remaining.get(metric)) is not None
        )
        need = " and ".join(format_amount(metric, self.need[metric]) for metric in METRICS)
        return (
            f"This request would go over {self.subject()} ({limit}). "
            f"Left {self.period.current}: {left}; it needs {need}. "
            f"It resets {format_reset(self.resets_at)}."
        )


class TooManyRefunds(InvalidRequest):
    """The member had too many jobs refunded today after the provider had them; nothing was
    reserved. The message says why and when they can ask again."""

    def __init__(self, count: int, resets_at: int) -> None:
        self.count = count
        self.resets_at = resets_at
        super().__init__(
            f"You've had {count} requests refunded here today after the image service had "
            "already taken them (blocked by its safety filter, or failed), and each of those "
            f"still costs the bot. You can ask again {format_reset(resets_at)}."
        )


class QuotaExceeded(InvalidRequest):
    """A request does not fit an allowance; nothing was reserved and no job was created.
    The message names the limit, what is left and when it resets (safe to show the user)."""

    def __init__(self, breach: Breach) -> None:
        self.breach = breach
        super().__init__(breach.message())


# --------------------------------------------------------------------------- allowance state
class LevelLimit(NamedTuple):  # a tuple: several are built for every reservation
    scope: Scope
    role_id: int | None
    limit: int | None  # None: unlimited
    bonus: int  # grants (per-member levels only)


@dataclass(frozen=True)
class QuotaState:
    """Everything needed to judge a request by one member at one moment."""

    guild_id: int
    starts: Mapping[Period, int]
    ends: Mapping[Period, int]
    levels: Mapping[LimitKey, tuple[LevelLimit, ...]]  # the levels that limit each key
    used_user: Mapping[LimitKey, int]
    used_guild: Mapping[LimitKey, int]
    refunded_today: int = 0  # counted only when the policy caps refunds
    max_refunded: int | None = None

    def used(self, scope: Scope, key: LimitKey) -> int:
        return (self.used_guild if scope is Scope.GUILD else self.used_user).get(key, 0)

    def remaining_at(self, level: LevelLimit, key: LimitKey) -> int | None:
        if level.limit is None:
            return None
        return max(0, level.limit + level.bonus - self.used(level.scope, key))

    def remaining(self, key: LimitKey) -> int | None:
        """What the member may still use of `key`: the tightest level (None: no limit)."""
        amounts = [
            amount
            for level in self.levels.get(key, ())
            if (amount := self.remaining_at(level, key)) is not None
        ]
        return min(amounts) if amounts else None

    def remaining_for(self, scope: Scope, key: LimitKey) -> int | None:
        """What is left at one level (None: that level sets no limit)."""
        for level in self.levels.get(key, ()):
            if level.scope is scope:
                return self.remaining_at(level, key)
        return None

    def with_held(self, held: Mapping[Metric, int]) -> QuotaState:
        """This state with `held` counted as used in every window, at the member's and the
        server's levels: amounts promised but not in the ledger yet (requests waiting for a
        moderator's approval)."""
        if not any(held.values()):
            return self

        def plus(used: Mapping[LimitKey, int]) -> dict[LimitKey, int]:
            totals = dict(used)
            for period in PERIODS:
                for metric in METRICS:
                    totals[(period, metric)] = totals.get((period, metric), 0) + held[metric]
            return totals

        return replace(self, used_user=plus(self.used_user), used_guild=plus(self.used_guild))

    def breaches(self, need: Mapping[Metric, int]) -> list[Breach]:
        found = []
        for key, levels in self.levels.items():
            period, metric = key
            for level in levels:
                if level.limit is None:
                    continue
                if self.used(level.scope, key) + need[metric] <= level.limit + level.bonus:
                    continue
                remaining: dict[Metric, int | None] = {}
                for other in METRICS:
                    same = [lv for lv in self.levels.get((period, other), ()) if _same(lv, level)]
                    remaining[other] = self.remaining_at(same[0], (period, other)) if same else None
                found.append(
                    Breach(
                        guild_id=self.guild_id,
                        scope=level.scope,
                        role_id=level.role_id,
                        period=period,
                        metric=metric,
                        limit=level.limit,
                        remaining=remaining,
                        need=need,
                        resets_at=self.ends[period],
                    )
                )
        return found


def _same(a: LevelLimit, b: LevelLimit) -> bool:
    return a.scope is b.scope and a.role_id == b.role_id


def _refuse_if_over(state: QuotaState, need: Mapping[Metric, int]) -> None:
    if state.max_refunded is not None and state.refunded_today >= state.max_refunded:
        raise TooManyRefunds(state.refunded_today, state.ends[Period.DAY])
    breaches = state.breaches(need)
    if breaches:
        raise QuotaExceeded(most_binding(breaches))


def most_binding(breaches: Iterable[Breach]) -> Breach:
    """The breach to report: the one that lifts last (a monthly limit outlasts a daily one),
    then the member's own before their role's before the server's."""
    return max(
        breaches,
        key=lambda b: (
            b.resets_at,
            -_LEVEL_ORDER[b.scope],
            -PERIODS.index(b.period),
            -METRICS.index(b.metric),
        ),
    )


# --------------------------------------------------------------------------- reports
@dataclass(frozen=True)
class WindowUsage:
    period: Period
    start: int
    resets_at: int
    images: int  # counted: charged, plus held for jobs still running
    credits_mc: int
    remaining_images: int | None  # None: no limit
    remaining_mc: int | None


@dataclass(frozen=True)
class MemberUsage:
    guild_id: int
    user_id: int
    windows: tuple[WindowUsage, ...]
    held_images: int  # reserved by jobs not settled yet (included in the windows)
    held_mc: int


@dataclass(frozen=True)
class Override:
    scope: Scope
    target_id: int
    period: Period
    metric: Metric
    amount: int | None
    updated_at: float
    updated_by: int


@dataclass(frozen=True)
class Change:
    """The outcome of a moderator's command, as audited."""

    summary: str


def describe_limit(metric: Metric, amount: int | None) -> str:
    return "unlimited" if amount is None else format_amount(metric, amount)


def describe_target(scope: Scope, target_id: int, guild_id: int) -> str:
    if scope is Scope.USER:
        return f"<@{target_id}>"
    if scope is Scope.ROLE:
        return "@everyone" if target_id == guild_id else f"<@&{target_id}>"
    return "the server"


_PERIOD_BY_NAME = {period.value: period for period in Period}
_METRIC_BY_NAME = {metric.value: metric for metric in Metric}
_SCOPE_BY_NAME = {scope.value: scope for scope in Scope}


@dataclass(frozen=True)
class _StateQuery:
    """The query reading a member's allowance state, and how to turn its rows into one."""

    policy: QuotaPolicy
    guild_id: int
    user_id: int
    roles: Sequence[int]
    now: float
    sql: str
    params: tuple[Any, ...]

    def build(self, rows: Iterable[sqlite3.Row]) -> QuotaState:
        guild_id, user_id, policy = self.guild_id, self.user_id, self.policy
        overrides: dict[tuple[Scope, int], dict[LimitKey, int | None]] = {}
        used_user: dict[LimitKey, int] = {}
        used_guild: dict[LimitKey, int] = {}
        bonus: dict[LimitKey, int] = {}
        refunded = 0
        for kind, scope, who, period_name, metric_name, a, b in rows:
            if kind == "refunds":
                refunded = a
                continue
            # Plain dict lookups: Enum(value) calls cost more than the rest of this loop.
            period = _PERIOD_BY_NAME[period_name]
            if kind == "limit":
                if guild_id:  # no moderators, so no overrides, in direct messages
                    limits = overrides.setdefault((_SCOPE_BY_NAME[scope], who), {})
                    limits[(period, _METRIC_BY_NAME[metric_name])] = a
            elif kind == "used":
                used = used_user if who == user_id and user_id != 0 else used_guild
                used[(period, Metric.CREDITS)] = a
                used[(period, Metric.IMAGES)] = b
            else:
                bonus[(period, _METRIC_BY_NAME[metric_name])] = a

        levels: dict[LimitKey, tuple[LevelLimit, ...]] = {}
        own = overrides.get((Scope.USER, user_id), {})
        server = overrides.get((Scope.GUILD, guild_id), {})
        for period in PERIODS:
            for metric in METRICS:
                key = (period, metric)
                extra = bonus.get(key, 0)
                found = [
                    LevelLimit(
                        Scope.USER, None, own[key] if key in own else policy.user[key], extra
                    )
                ]
                best = _best_role(overrides, self.roles, key)
                if best is not None:
                    found.append(LevelLimit(Scope.ROLE, best[0], best[1], extra))
                if guild_id:
                    limit = server[key] if key in server else policy.guild[key]
                    found.append(LevelLimit(Scope.GUILD, None, limit, 0))
                levels[key] = tuple(found)
        windows = policy.schedule.windows(self.now)
        return QuotaState(
            guild_id, windows.starts, windows.ends, levels, used_user, used_guild,
            refunded, policy.max_refunded_per_day,
        )  # fmt: skip


class Ledger:
    def __init__(
        self,
        db: Database,
        policy: QuotaPolicy | None = None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.db = db
        self.policy = policy or QuotaPolicy.unlimited()
        self._clock = clock

    def now(self) -> float:
        return self._clock()

    # ----------------------------------------------------------------- state
    def _state_query(
        self, guild_id: int, user_id: int, role_ids: Sequence[int], now: float
    ) -> _StateQuery:
        """The one query that reads everything judging a member's request (overrides, window
        totals, grants): each round trip to the database costs more than the reading itself,
        and this runs inside the write transaction of every new job."""
        starts = self.policy.schedule.starts(now)
        # @everyone's id is the server's: its allowance applies to every member, whether or
        # not the caller listed the default role.
        roles = sorted({*role_ids, guild_id}) if guild_id else []
        # Window totals and grants are read per window, so each is a point lookup however
        # much history the tables hold.
        used_sql = " UNION ALL ".join(
            "SELECT 'used', NULL, user_id, period, NULL, credits_mc, images FROM usage_totals"
            " WHERE guild_id = ? AND user_id IN (?, 0) AND period = ? AND period_start = ?"
            for _ in PERIODS
        )
        grants_sql = " UNION ALL ".join(
            "SELECT 'grant', NULL, NULL, period, metric, SUM(amount), NULL FROM quota_grants"
            " WHERE guild_id = ? AND user_id = ? AND period = ? AND period_start = ?"
            " GROUP BY metric"
            for _ in PERIODS
        )
        keys = [
            value
            for period in PERIODS
            for value in (guild_id, user_id, period.value, starts[period])
        ]
        role_marks = ",".join("?" for _ in roles) or "NULL"
        sql = (
            "SELECT 'limit' AS kind, scope, target_id AS who, period, metric, amount AS a,"
            " NULL AS b FROM quota_limits WHERE guild_id = ? AND (scope = 'guild'"
            " OR (scope = 'user' AND target_id = ?)"
            f" OR (scope = 'role' AND target_id IN ({role_marks})))"
            f" UNION ALL {used_sql} UNION ALL {grants_sql}"
        )
        params: tuple[Any, ...] = (guild_id, user_id, *roles, *keys, *keys)
        if self.policy.max_refunded_per_day is not None:
            # Refunds that cost the operator: the provider had the job (a task id), so it
            # billed it, and its safety filter or a failure ended it. Cancelled jobs and
            # failures before the provider took the job never had a task id.
            sql += (
                " UNION ALL SELECT 'refunds', NULL, NULL, NULL, NULL, count(*), NULL"
                " FROM ledger JOIN jobs ON jobs.id = ledger.job_id"
                " WHERE ledger.guild_id = ? AND ledger.user_id = ? AND ledger.reserved_at >= ?"
                " AND ledger.status = 'refunded' AND jobs.provider_task_id IS NOT NULL"
            )
            params += (guild_id, user_id, starts[Period.DAY])
        return _StateQuery(self.policy, guild_id, user_id, roles, now, sql, params)

    async def _state(
        self, guild_id: int, user_id: int, role_ids: Sequence[int], now: float
    ) -> QuotaState:
        query = self._state_query(guild_id, user_id, role_ids, now)
        return query.build(await self.db.fetch_all(query.sql, query.params))

    # ----------------------------------------------------------------- reserve and settle
    # These run inside the caller's write transaction, on the database thread (see
    # `Database.run`): a job's reservation is written with the job, its settlement with the
    # state change that ends it.
    def reserve(
        self,
        conn: sqlite3.Connection,
        *,
        job_id: str,
        guild_id: int | None,
        user_id: int,
        role_ids: Sequence[int],
        variant: str,
        credits: float,
        images: int,
        now: float | None = None,
    ) -> None:
        """Hold `credits` and `images` for a job, or raise QuotaExceeded having written
        nothing."""
        now = self._clock() if now is None else now
        gid = guild_key(guild_id)
        need = {Metric.IMAGES: images, Metric.CREDITS: credits_to_mc(credits)}
        query = self._state_query(gid, user_id, role_ids, now)
        state = query.build(conn.execute(query.sql, query.params).fetchall())
        _refuse_if_over(state, need)
        starts = state.starts
        conn.execute(
            "INSERT INTO ledger (job_id, guild_id, user_id, variant, reserved_at, day_start,"
            " week_start, month_start, reserved_mc, reserved_images, credits_mc, images)"
            " VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                job_id,
                gid,
                user_id,
                variant,
                now,
                starts[Period.DAY],
                starts[Period.WEEK],
                starts[Period.MONTH],
                need[Metric.CREDITS],
                images,
                need[Metric.CREDITS],
                images,
            ),
        )

    async def check(
        self,
        guild_id: int | None,
        user_id: int,
        role_ids: Sequence[int],
        *,
        credits: float,
        images: int,
    ) -> None:
        """The test `reserve` makes, holding nothing (raises QuotaExceeded)."""
        state = await self._state(guild_key(guild_id), user_id, role_ids, self._clock())
        _refuse_if_over(state, {Metric.IMAGES: images, Metric.CREDITS: credits_to_mc(credits)})

    def check_in(
        self,
        conn: sqlite3.Connection,
        *,
        guild_id: int | None,
        user_id: int,
        role_ids: Sequence[int],
        credits: float,
        images: int,
        held: Mapping[Metric, int] | None = None,
        now: float | None = None,
    ) -> None:
        """The test `reserve` makes, inside the caller's transaction, holding nothing; `held`
        (images, millicredits) counts as already used. Raises QuotaExceeded."""
        now = self._clock() if now is None else now
        query = self._state_query(guild_key(guild_id), user_id, role_ids, now)
        state = query.build(conn.execute(query.sql, query.params).fetchall())
        if held is not None:
            state = state.with_held(held)
        _refuse_if_over(state, {Metric.IMAGES: images, Metric.CREDITS: credits_to_mc(credits)})

    def charge(
        self,
        conn: sqlite3.Connection,
        job_id: str,
        *,
        credits: float | None,
        images: int | None,
        settled_by: str,
        now: float | None = None,
    ) -> bool:
        """Settle a job that produced its image: `credits` is the provider's cost (None: the
        estimate stands), `images` how many were made (None: as reserved). Returns False if
        the job was already settled or never reserved; raises InvalidCharge for a negative,
        non-finite or absurd amount, having written nothing."""
        if credits is not None and not (
            math.isfinite(credits) and 0 <= credits_to_mc(credits) <= MAX_AMOUNT
        ):
            raise InvalidCharge(f"refusing to charge {credits!r} credits for job {job_id}")
        if images is not None and images < 0:
            raise InvalidCharge(f"refusing to charge {images} images for job {job_id}")
        return self._settle(
            conn,
            job_id,
            "charged",
            None if credits is None else credits_to_mc(credits),
            images,
            settled_by,
            now,
        )

    def refund(
        self,
        conn: sqlite3.Connection,
        job_id: str,
        *,
        settled_by: str,
        now: float | None = None,
    ) -> bool:
        """Settle a job that made nothing for the member: everything it held is returned."""
        return self._settle(conn, job_id, "refunded", 0, 0, settled_by, now)

    def _settle(
        self,
        conn: sqlite3.Connection,
        job_id: str,
        status: str,
        charged_mc: int | None,
        charged_images: int | None,
        settled_by: str,
        now: float | None,
    ) -> bool:
        now = self._clock() if now is None else now
        # The status test makes this a compare-and-set: the second settlement of a job (a
        # retry, a restart, a later state change) matches no row and changes nothing. The
        # window totals follow through the ledger_counts_settlement trigger.
        cursor = conn.execute(
            "UPDATE ledger SET status = ?,"
            " charged_mc = COALESCE(?, reserved_mc), charged_images = COALESCE(?, reserved_images),"
            " credits_mc = COALESCE(?, reserved_mc), images = COALESCE(?, reserved_images),"
            " settled_at = ?, settled_by = ?"
            " WHERE job_id = ? AND status = 'reserved'",
            (
                status,
                charged_mc,
                charged_images,
                charged_mc,
                charged_images,
                now,
                settled_by,
                job_id,
            ),
        )
        return cursor.rowcount == 1

    # ----------------------------------------------------------------- what members see
    async def state(
        self,
        guild_id: int | None,
        user_id: int,
        role_ids: Sequence[int] = (),
        *,
        now: float | None = None,
    ) -> QuotaState:
        """The allowances and usage that would judge a request by this member now."""
        now = self._clock() if now is None else now
        return await self._state(guild_key(guild_id), user_id, role_ids, now)

    async def member_usage(
        self,
        guild_id: int | None,
        user_id: int,
        role_ids: Sequence[int] = (),
        *,
        now: float | None = None,
    ) -> MemberUsage:
        now = self._clock() if now is None else now
        gid = guild_key(guild_id)
        state = await self._state(gid, user_id, role_ids, now)
        windows = tuple(
            WindowUsage(
                period=period,
                start=state.starts[period],
                resets_at=state.ends[period],
                images=state.used_user.get((period, Metric.IMAGES), 0),
                credits_mc=state.used_user.get((period, Metric.CREDITS), 0),
                remaining_images=state.remaining((period, Metric.IMAGES)),
                remaining_mc=state.remaining((period, Metric.CREDITS)),
            )
            for period in PERIODS
        )
        row = await self.db.fetch_one(
            "SELECT COALESCE(SUM(reserved_images), 0) AS images,"
            " COALESCE(SUM(reserved_mc), 0) AS mc FROM ledger"
            " WHERE guild_id = ? AND user_id = ? AND status = 'reserved'",
            (gid, user_id),
        )
        assert row is not None
        return MemberUsage(gid, user_id, windows, row["images"], row["mc"])

    # ----------------------------------------------------------------- moderators
    async def overrides(self, guild_id: int) -> list[Override]:
        rows = await self.db.fetch_all(
            "SELECT * FROM quota_limits WHERE guild_id = ? ORDER BY scope, target_id, period,"
            " metric",
            (guild_id,),
        )
        return [
            Override(
                Scope(r["scope"]),
                r["target_id"],
                Period(r["period"]),
                Metric(r["metric"]),
                r["amount"],
                r["updated_at"],
                r["updated_by"],
            )
            for r in rows
        ]

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
        a role or the whole server, and audit it."""
        if amount is not None and not 0 <= amount <= MAX_AMOUNT:
            raise InvalidRequest("The amount must be 0 or more (or -1 for unlimited).")
        target = guild_id if scope is Scope.GUILD else target_id
        key = (period, metric)
        now = self._clock()
        async with self.db.transaction() as conn:
            rows = list(
                await conn.execute_fetchall(
                    "SELECT amount FROM quota_limits WHERE guild_id = ? AND scope = ?"
                    " AND target_id = ? AND period = ? AND metric = ?",
                    (guild_id, scope.value, target, period.value, metric.value),
                )
            )
            before = (
                describe_limit(metric, rows[0]["amount"]) if rows else self._default(scope, key)
            )
            after = describe_limit(metric, amount)
            await conn.execute(
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
            await self._audit(
                conn, now, guild_id, actor_id, "set", scope, target, period, metric, before, after,
                summary,
            )  # fmt: skip
        return Change(summary)

    async def grant(
        self,
        guild_id: int,
        actor_id: int,
        user_id: int,
        period: Period,
        metric: Metric,
        amount: int,
    ) -> Change:
        """Give one member extra allowance for the current window only."""
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
        async with self.db.transaction() as conn:
            await conn.execute(
                "INSERT INTO quota_grants (guild_id, user_id, period, period_start, metric,"
                " amount, granted_at, granted_by) VALUES (?,?,?,?,?,?,?,?)",
                (guild_id, user_id, period.value, start, metric.value, amount, now, actor_id),
            )
            await self._audit(
                conn, now, guild_id, actor_id, "grant", Scope.USER, user_id, period, metric,
                None, f"+{given}", summary,
            )  # fmt: skip
        return Change(summary)

    async def reset(self, guild_id: int, actor_id: int, scope: Scope, target_id: int) -> Change:
        """Drop every override for a member, role or the server (and a member's grants for
        the current windows): they are back on the defaults."""
        target = guild_id if scope is Scope.GUILD else target_id
        now = self._clock()
        who = describe_target(scope, target, guild_id)
        async with self.db.transaction() as conn:
            cursor = await conn.execute(
                "DELETE FROM quota_limits WHERE guild_id = ? AND scope = ? AND target_id = ?",
                (guild_id, scope.value, target),
            )
            removed = cursor.rowcount
            grants = 0
            if scope is Scope.USER:
                starts = self.policy.schedule.starts(now)
                cursor = await conn.execute(
                    "DELETE FROM quota_grants WHERE guild_id = ? AND user_id = ? AND ("
                    + " OR ".join("(period = ? AND period_start >= ?)" for _ in PERIODS)
                    + ")",
                    (
                        guild_id,
                        target,
                        *(value for p in PERIODS for value in (p.value, starts[p])),
                    ),
                )
                grants = cursor.rowcount
            if removed or grants:
                parts = [plural(removed, "override")] if removed else []
                parts += [plural(grants, "grant")] if grants else []
                summary = f"Reset {who} to the defaults: removed {' and '.join(parts)}."
            else:
                summary = f"Nothing to reset: {who} already has the defaults."
            await self._audit(
                conn, now, guild_id, actor_id, "reset", scope, target, None, None,
                f"{removed} overrides, {grants} grants", "defaults", summary,
            )  # fmt: skip
        return Change(summary)

    async def _audit(
        self,
        conn: aiosqlite.Connection,
        now: float,
        guild_id: int,
        actor_id: int,
        action: str,
        scope: Scope,
        target_id: int,
        period: Period | None,
        metric: Metric | None,
        before: str | None,
        after: str | None,
        summary: str,
    ) -> None:
        await conn.execute(
            "INSERT INTO quota_audit (at, guild_id, actor_id, action, scope, target_id, period,"
            " metric, before, after, summary) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
            (
                now,
                guild_id,
                actor_id,
                action,
                scope.value,
                target_id,
                period and period.value,
                metric and metric.value,
                before,
                after,
                summary,
            ),
        )

    async def audit_log(self, guild_id: int, limit: int = 10) -> list[aiosqlite.Row]:
        """The latest moderator changes on a server, newest first."""
        return await self.db.fetch_all(
            "SELECT * FROM quota_audit WHERE guild_id = ? ORDER BY at DESC, id DESC LIMIT ?",
            (guild_id, limit),
        )


def _best_role(
    overrides: Mapping[tuple[Scope, int], Mapping[LimitKey, int | None]],
    roles: Sequence[int],
    key: LimitKey,
) -> tuple[int, int | None] | None:
    """(role id, limit) of the most generous of the member's roles that sets `key`; an
    unlimited role wins outright. None when no role of theirs sets it."""
    best: tuple[int, int | None] | None = None
    for role_id in roles:
        limits = overrides.get((Scope.ROLE, role_id))
        if limits is None or key not in limits:
            continue
        amount = limits[key]
        if amount is None:
            return role_id, None
        if best is None or (best[1] is not None and amount > best[1]):
            best = (role_id, amount)
    return best


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
