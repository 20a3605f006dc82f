"""Judging a request against its allowances.

Three levels of allowance all apply to a request, each over a day, a week and a month, in
images and in credits:

* the member's own allowance (a moderator's override for them, else the bot default);
* the allowance of their roles: a per-member limit that comes with a role, the most generous
  of their roles that has one (roles without an allowance are ignored, so a member with no
  such role has no role limit);
* the server's total budget (a moderator's override, else the bot default).

Grants (extra images or credits for one member in the current window) raise the two
per-member levels; the server budget is never raised by them. `state_query` reads all of it
in one query; `QuotaState` judges a request; `refuse_if_over` raises the refusal.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, NamedTuple

from bot.errors import InvalidRequest
from bot.ledger.policy import METRICS, LimitKey, Metric, QuotaPolicy, Scope, format_amount
from bot.periods import PERIODS, Period, format_reset
from bot.storage.db import Row
from bot.storage.rows import marks

__all__ = [
    "Breach",
    "LevelLimit",
    "QuotaExceeded",
    "QuotaState",
    "StateQuery",
    "TooManyRefunds",
    "guild_key",
    "most_binding",
    "refuse_if_over",
    "state_query",
]

# The order levels are named in when two breached limits reset at the same moment.
_LEVEL_ORDER = {Scope.USER: 0, Scope.ROLE: 1, Scope.GUILD: 2}


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
        limit = f"{format_amount(breach.metric, breach.limit)} a {breach.period.value}"
        left = " and ".join(
            format_amount(metric, amount)
            for metric in METRICS
            if (amount := breach.remaining.get(metric)) is not None
        )
        need = " and ".join(format_amount(metric, breach.need[metric]) for metric in METRICS)
        super().__init__(
            f"This request would go over {_subject(breach)} ({limit}). "
            f"Left {breach.period.current}: {left}; it needs {need}. "
            f"It resets {format_reset(breach.resets_at)}."
        )


def _subject(breach: Breach) -> str:
    """The allowance a refusal names, as the member sees it."""
    kind = f"{breach.period.adjective} {breach.metric.singular}"
    if breach.scope is Scope.USER:
        return f"your {kind} allowance"
    if breach.scope is Scope.ROLE:
        if breach.role_id == breach.guild_id:  # @everyone shares the server's id
            return f"the {kind} allowance for everyone on this server"
        return f"the {kind} allowance for your role <@&{breach.role_id}>"
    return f"this server's {kind} budget"


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


def refuse_if_over(state: QuotaState, need: Mapping[Metric, int]) -> None:
    """Refuse a request needing `need` (images, millicredits) in `state`.

    Raises:
        TooManyRefunds: the member reached the day's cap on refunded jobs.
        QuotaExceeded: the request would go over a limit (the most binding one is named).
    """
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


_PERIOD_BY_NAME = {period.value: period for period in Period}
_METRIC_BY_NAME = {metric.value: metric for metric in Metric}
_SCOPE_BY_NAME = {scope.value: scope for scope in Scope}


@dataclass(frozen=True)
class StateQuery:
    """The query reading a member's allowance state, and how to turn its rows into one."""

    policy: QuotaPolicy
    guild_id: int
    user_id: int
    roles: Sequence[int]
    now: float
    sql: str
    params: tuple[Any, ...]

    def build(self, rows: Iterable[Row]) -> QuotaState:
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


def state_query(
    policy: QuotaPolicy, guild_id: int, user_id: int, role_ids: Sequence[int], now: float
) -> StateQuery:
    """The one query that reads everything judging a member's request (overrides, window
    totals, grants): each round trip to the database costs more than the reading itself,
    and this runs inside the write transaction of every new job."""
    starts = policy.schedule.starts(now)
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
        " GROUP BY period, metric"
        for _ in PERIODS
    )
    keys = [
        value for period in PERIODS for value in (guild_id, user_id, period.value, starts[period])
    ]
    role_marks = marks(roles) or "NULL"
    sql = (
        "SELECT 'limit' AS kind, scope, target_id AS who, period, metric, amount AS a,"
        " NULL AS b FROM quota_limits WHERE guild_id = ? AND (scope = 'guild'"
        " OR (scope = 'user' AND target_id = ?)"
        f" OR (scope = 'role' AND target_id IN ({role_marks})))"
        f" UNION ALL {used_sql} UNION ALL {grants_sql}"
    )
    params: tuple[Any, ...] = (guild_id, user_id, *roles, *keys, *keys)
    if policy.max_refunded_per_day is not None:
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
    return StateQuery(policy, guild_id, user_id, roles, now, sql, params)


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
