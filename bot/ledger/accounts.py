"""The money path: every job reserves its estimated cost (and its images) in the transaction
that creates it; the job's final state change settles the reservation in *its* transaction:
a charge of the provider's real cost once the image exists, a full refund otherwise.
Settlement is a compare-and-set on the ledger row's status, so it happens at most once per
job, whatever restarts or races occur.

The rules that judge a request are in `bot.ledger.quotas`; moderators' changes to the
allowances in `bot.ledger.admin` (reached as `Ledger.admin`); the servers that may spend at
all, and the whole bot's monthly budget, in `bot.ledger.spending` (`Ledger.budget`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from bot.errors import InvalidCharge
from bot.ledger.admin import QuotaAdmin
from bot.ledger.policy import MAX_AMOUNT, Metric, QuotaPolicy, credits_to_mc
from bot.ledger.quotas import (
    QuotaExceeded,
    QuotaState,
    guild_key,
    most_binding,
    refuse_if_over,
    state_query,
)
from bot.ledger.spending import BotBudget, ServerNotAllowed
from bot.periods import PERIODS, Period
from bot.servers.audit import AuditLog
from bot.storage.base import Reads
from bot.storage.db import Database, Tx

__all__ = ["Ledger", "MemberUsage", "WindowUsage"]


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


class Ledger:
    """Reservations and settlements of jobs, and what members have used.

    `admin` holds the moderators' commands; each of their changes is recorded in `audit`
    (without one, in an audit log that posts nowhere: tests, tools)."""

    def __init__(
        self,
        db: Database,
        policy: QuotaPolicy | None = None,
        *,
        clock: Callable[[], float] = time.time,
        audit: AuditLog | None = None,
    ) -> None:
        self.db = db
        self.policy = policy or QuotaPolicy.unlimited()
        self._clock = clock
        audit = audit or AuditLog(db, audit_channel=lambda _guild: None, clock=clock)
        self.admin = QuotaAdmin(db, self.policy, audit, clock=clock)
        self.budget = BotBudget(db, self.policy, clock=clock)

    def now(self) -> float:
        return self._clock()

    async def apply_policy(self, policy: QuotaPolicy) -> None:
        """New bot-wide defaults in force from the next request on (the owner changed them,
        bot/operator/defaults.py): the allowances, and the whole bot's monthly budget."""
        self.policy = policy
        self.admin.policy = policy
        await self.budget.set_cap(policy.bot_monthly_mc)

    async def _state(
        self, guild_id: int, user_id: int, role_ids: Sequence[int], now: float
    ) -> QuotaState:
        query = state_query(self.policy, guild_id, user_id, role_ids, now)
        return query.build(await self.db.fetch_all(query.sql, query.params))

    async def _state_in(
        self,
        tx: Tx,
        guild_id: int,
        user_id: int,
        role_ids: Sequence[int],
        now: float,
    ) -> QuotaState:
        """The same state, read inside the caller's transaction.

        Takes the server's allowance lock first: on PostgreSQL, two reservations in one
        server would otherwise both read the usage before either wrote, and both fit."""
        await tx.lock(f"allowance:{guild_id}")
        query = state_query(self.policy, guild_id, user_id, role_ids, now)
        return query.build(await tx.fetch_all(query.sql, query.params))

    # ----------------------------------------------------------------- reserve and settle
    # These run inside the caller's write transaction (see `Database.run`): a job's
    # reservation is written with the job, its settlement with the state change that ends it.
    async def reserve(
        self,
        tx: Tx,
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
        """Hold `credits` and `images` for a job (its ledger row), in `tx`'s transaction.

        Raises:
            ServerNotAllowed: the server is not on ALLOWED_GUILD_IDS; nothing was written.
            QuotaExceeded: the job does not fit an allowance; nothing was written.
            TooManyRefunds: the member reached the day's cap on refunded jobs.
            BotBudgetSpent: the job does not fit the whole bot's monthly budget.
        """
        now = self._clock() if now is None else now
        self._refuse_server(guild_id)
        gid = guild_key(guild_id)
        need = {Metric.IMAGES: images, Metric.CREDITS: credits_to_mc(credits)}
        state = await self._state_in(tx, gid, user_id, role_ids, now)
        refuse_if_over(state, need)
        # Last, after the member's and the server's own limits: it takes the one lock every
        # reservation of the fleet shares, so a refused request never waits for it.
        await self.budget.reserve_in(
            tx, need[Metric.CREDITS], state.starts[Period.MONTH], state.ends[Period.MONTH]
        )
        starts = state.starts
        await tx.execute(
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

    async def reserve_more(
        self,
        tx: Tx,
        *,
        job_id: str,
        guild_id: int | None,
        user_id: int,
        role_ids: Sequence[int],
        variant: str,
        credits: float,
        now: float | None = None,
    ) -> int:
        """Move a held job to `variant` (another provider makes it: bot/jobs/failover.py),
        its reservation raised to `credits` when that is more, in `tx`'s transaction. Only
        the difference is judged, against the allowances and the bot's budget (the job's own
        reservation already counts as used). Returns the millicredits added.

        Raises:
            QuotaExceeded: the difference does not fit an allowance; nothing was written.
            BotBudgetSpent: it does not fit the whole bot's monthly budget.
        """
        reserved = await tx.fetch_value(
            "SELECT reserved_mc FROM ledger WHERE job_id = ? AND status = 'reserved'", (job_id,)
        )
        if reserved is None:
            return 0  # settled or never reserved: nothing is held to move
        more = max(0, credits_to_mc(credits) - int(reserved))
        if more:
            now = self._clock() if now is None else now
            state = await self._state_in(tx, guild_key(guild_id), user_id, role_ids, now)
            # Not `refuse_if_over`: the day's refund cap is for new requests, and this
            # one was admitted already.
            breaches = state.breaches({Metric.IMAGES: 0, Metric.CREDITS: more})
            if breaches:
                raise QuotaExceeded(most_binding(breaches))
            await self.budget.reserve_in(
                tx, more, state.starts[Period.MONTH], state.ends[Period.MONTH]
            )
        await tx.execute(
            "UPDATE ledger SET variant = ?, reserved_mc = reserved_mc + ?,"
            " credits_mc = credits_mc + ? WHERE job_id = ? AND status = 'reserved'",
            (variant, more, more, job_id),
        )
        return more

    async def check(
        self,
        guild_id: int | None,
        user_id: int,
        role_ids: Sequence[int],
        *,
        credits: float,
        images: int,
    ) -> None:
        """The test `reserve` makes, holding nothing.

        Raises:
            ServerNotAllowed: the server is not on ALLOWED_GUILD_IDS.
            QuotaExceeded: the request would not fit an allowance.
            TooManyRefunds: the member reached the day's cap on refunded jobs.
            BotBudgetSpent: the request would not fit the whole bot's monthly budget.
        """
        self._refuse_server(guild_id)
        state = await self._state(guild_key(guild_id), user_id, role_ids, self._clock())
        need_mc = credits_to_mc(credits)
        refuse_if_over(state, {Metric.IMAGES: images, Metric.CREDITS: need_mc})
        await self._check_budget(self.db, state, need_mc)

    async def check_in(
        self,
        tx: Tx,
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
        (images, millicredits) counts as already used.

        Raises:
            ServerNotAllowed: the server is not on ALLOWED_GUILD_IDS.
            QuotaExceeded: the request would not fit an allowance.
            TooManyRefunds: the member reached the day's cap on refunded jobs.
            BotBudgetSpent: the request would not fit the whole bot's monthly budget.
        """
        now = self._clock() if now is None else now
        self._refuse_server(guild_id)
        state = await self._state_in(tx, guild_key(guild_id), user_id, role_ids, now)
        if held is not None:
            state = state.with_held(held)
        need_mc = credits_to_mc(credits)
        refuse_if_over(state, {Metric.IMAGES: images, Metric.CREDITS: need_mc})
        await self._check_budget(tx, state, need_mc)

    def _refuse_server(self, guild_id: int | None) -> None:
        if not self.policy.server_allowed(guild_id):
            raise ServerNotAllowed()

    async def _check_budget(self, reads: Reads, state: QuotaState, need_mc: int) -> None:
        await self.budget.check(
            reads, need_mc, state.starts[Period.MONTH], state.ends[Period.MONTH]
        )

    async def charge(
        self,
        tx: Tx,
        job_id: str,
        *,
        credits: float | None,
        images: int | None,
        settled_by: str,
        now: float | None = None,
    ) -> bool:
        """Settle a job that produced its image: `credits` is the provider's cost (None: the
        estimate stands), `images` how many were made (None: as reserved). Returns False if
        the job was already settled or never reserved.

        Raises:
            InvalidCharge: a negative, non-finite or absurd amount; nothing was written.
        """
        if credits is not None and not (
            math.isfinite(credits) and 0 <= credits_to_mc(credits) <= MAX_AMOUNT
        ):
            raise InvalidCharge(f"refusing to charge {credits!r} credits for job {job_id}")
        if images is not None and images < 0:
            raise InvalidCharge(f"refusing to charge {images} images for job {job_id}")
        return await self._settle(
            tx,
            job_id,
            "charged",
            None if credits is None else credits_to_mc(credits),
            images,
            settled_by,
            now,
        )

    async def refund(
        self,
        tx: Tx,
        job_id: str,
        *,
        settled_by: str,
        now: float | None = None,
    ) -> bool:
        """Settle a job that made nothing for the member: everything it held is returned.
        Returns False if the job was already settled or never reserved."""
        return await self._settle(tx, job_id, "refunded", 0, 0, settled_by, now)

    async def _settle(
        self,
        tx: Tx,
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
        settled = await tx.fetch_all(
            "UPDATE ledger SET status = ?,"
            " charged_mc = COALESCE(?, reserved_mc), charged_images = COALESCE(?, reserved_images),"
            " credits_mc = COALESCE(?, reserved_mc), images = COALESCE(?, reserved_images),"
            " settled_at = ?, settled_by = ?"
            " WHERE job_id = ? AND status = 'reserved' RETURNING reserved_mc, credits_mc",
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
        if settled and settled[0]["credits_mc"] > settled[0]["reserved_mc"]:
            await self.budget.grew_in(tx)  # the provider's cost was above the estimate
        return bool(settled)

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
        """What the member used and has left in each window, and what their open jobs hold."""
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
