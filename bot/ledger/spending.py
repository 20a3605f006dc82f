"""Who may spend the operator's money.

Anyone can add a public bot to their own server, and every server gets the default budget.
Two settings bound what strangers can spend:

* `ALLOWED_GUILD_IDS`: only these servers may make images (`ServerNotAllowed` elsewhere).
  The community policy refuses first, before anything is checked or posted; the ledger
  refuses again in the transaction that would reserve, so no path around the policy (a
  button, a moderator approving an older request) spends for a server not on the list.
* `BOT_MONTHLY_CREDITS`: one budget over every server and direct messages together
  (`BotBudget`), judged in the reservation's own transaction under one fleet-wide lock, so a
  burst from many servers and processes cannot overshoot it. What it counts is the month's
  window totals of every server (`usage_totals`, user 0): a reservation counts its estimate,
  its settlement the provider's cost instead (0 when refunded), so the figure is exact.

The owner is warned at 80 % and 100 % of the budget, once per month and threshold over the
whole fleet: the first process to see it claims the warning in `bot_budget_alerts`, logs it
and hands it to the listeners (the Discord client posts it to the owner).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from bot.errors import InvalidRequest
from bot.ledger.policy import QuotaPolicy, format_credits
from bot.periods import Period, format_reset
from bot.storage.base import Reads
from bot.storage.db import Database, Tx

__all__ = [
    "ALERT_PERCENTS",
    "BotBudget",
    "BotBudgetSpent",
    "BudgetAlert",
    "ServerNotAllowed",
    "public_bot_warning",
]

log = logging.getLogger(__name__)

SERVER_NOT_ALLOWED_TEXT = (
    "This bot isn't enabled on this server, so it can't make images here. Its owner "
    "chooses the servers that may use it. Nothing was charged."
)
ALERT_PERCENTS = (80, 100)
BUDGET_CHANNEL = "fluxcord_budget"  # "a reservation may have crossed a warning threshold"
STOP_GRACE_SECONDS = 5.0
# A notification lost with the LISTEN connection only delays a warning until this re-check.
RECHECK_SECONDS = 300.0
_BUDGET_LOCK = "allowance:bot"  # taken after the server's own allowance lock, never before
_USED_SQL = (
    "SELECT COALESCE(SUM(credits_mc), 0) FROM usage_totals"
    " WHERE user_id = 0 AND period = 'month' AND period_start = ?"
)


class ServerNotAllowed(InvalidRequest):
    """A server not on ALLOWED_GUILD_IDS asked for an image: nothing is checked or reserved."""

    def __init__(self) -> None:
        super().__init__(SERVER_NOT_ALLOWED_TEXT)


class BotBudgetSpent(InvalidRequest):
    """The request does not fit what is left of the whole bot's monthly budget (every server
    shares it); nothing was reserved."""

    def __init__(self, resets_at: int) -> None:
        self.resets_at = resets_at
        super().__init__(
            "This bot's monthly budget, shared by every server it's on, doesn't have enough "
            f"left for this request. It resets {format_reset(resets_at)}. Nothing was charged."
        )


@dataclass(frozen=True)
class BudgetAlert:
    """The owner's warning: the bot-wide budget reached `percent` of its cap."""

    percent: int
    used_mc: int
    cap_mc: int
    resets_at: int

    @property
    def text(self) -> str:
        used, cap = format_credits(self.used_mc), format_credits(self.cap_mc)
        reset = format_reset(self.resets_at)
        if self.percent < 100:
            return (
                f"Fluxcord has used {self.percent}% of its monthly budget (BOT_MONTHLY_CREDITS):"
                f" {used} of {cap} credits. It resets {reset}."
            )
        # 100 %: spent, or so nearly that a request was refused for what is left.
        state = "has used up" if self.used_mc >= self.cap_mc else "has too little left of"
        return (
            f"Fluxcord {state} its monthly budget (BOT_MONTHLY_CREDITS): {used} of {cap} "
            f"credits used. Requests that would go over it are refused until it resets {reset}."
        )


AlertSink = Callable[[BudgetAlert], Awaitable[None]]


def public_bot_warning(bot_public: bool, policy: QuotaPolicy) -> str | None:
    """What to tell the operator at start-up when strangers can add the bot and spend."""
    if not bot_public or policy.allowed_guilds is not None:
        return None
    cap = (
        "no bot-wide cap (BOT_MONTHLY_CREDITS)"
        if policy.bot_monthly_mc is None
        else f"a bot-wide cap of {format_credits(policy.bot_monthly_mc)} credits a month"
    )
    return (
        "'Public Bot' is on in the Discord developer portal and ALLOWED_GUILD_IDS is unset: "
        "anyone can add this bot to their server and spend your provider credits (each server "
        f"gets the DEFAULT_GUILD_* budget; {cap}). Turn 'Public Bot' off, or set "
        "ALLOWED_GUILD_IDS."
    )


class BotBudget:
    """The whole bot's monthly budget (`QuotaPolicy.bot_monthly_mc`) and the owner's
    warnings about it. With no cap every method does nothing."""

    def __init__(
        self, db: Database, policy: QuotaPolicy, *, clock: Callable[[], float] = time.time
    ) -> None:
        self._db = db
        self.cap_mc = policy.bot_monthly_mc
        self._schedule = policy.schedule
        self._clock = clock
        self._sinks: list[AlertSink] = []
        # (month start, percent) of warnings known to be sent, by this process or another.
        self._sent: set[tuple[int, int]] = set()
        # The month in which this process refused a request for want of budget: the 100 %
        # warning then goes out even if what is left is just too little for that request.
        self._refused_in: int | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wanted = False
        self._checker: asyncio.Task[None] | None = None
        self._rechecks: asyncio.Task[None] | None = None
        self._running = False
        self._started = False  # `start` was called (and `stop` not yet)

    def on_alert(self, sink: AlertSink) -> None:
        """Call `sink` with each warning this process claims (the Discord client's)."""
        self._sinks.append(sink)

    async def start(self) -> None:
        """Watch for the thresholds: after every reservation that may have crossed one (a
        notification from any process, once it commits), and once now."""
        self._started = True
        if self.cap_mc is not None:
            await self._watch()

    async def _watch(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._running = True
        await self._db.listen(BUDGET_CHANNEL, lambda _payload: self.nudge())
        self.nudge()
        self._rechecks = asyncio.create_task(self._recheck_now_and_then())

    async def set_cap(self, cap_mc: int | None) -> None:
        """A new cap from the next reservation on (None: no cap); once started, a cap set
        where there was none starts the watch for its thresholds."""
        changed, self.cap_mc = cap_mc != self.cap_mc, cap_mc
        if cap_mc is not None and self._started and not self._running:
            await self._watch()
        elif changed:
            self.nudge()  # the thresholds may be crossed already under the new cap

    async def _recheck_now_and_then(self) -> None:
        while True:
            await asyncio.sleep(RECHECK_SECONDS)
            self.nudge()

    async def stop(self) -> None:
        """Let a check in progress finish (a read and at most two inserts: cancelled, it
        would leave PostgreSQL an interrupted statement), unless the store does not answer."""
        self._running = False  # a notification arriving now starts nothing
        self._started = False
        rechecks, self._rechecks = self._rechecks, None
        if rechecks is not None:
            rechecks.cancel()
            await asyncio.gather(rechecks, return_exceptions=True)
        checker, self._checker = self._checker, None
        self._wanted = False
        if checker is not None:
            await asyncio.wait({checker}, timeout=STOP_GRACE_SECONDS)
            checker.cancel()
            await asyncio.gather(checker, return_exceptions=True)

    # ----------------------------------------------------------------- in a transaction
    async def reserve_in(self, tx: Tx, need_mc: int, month_start: int, resets_at: int) -> None:
        """Admit `need_mc` more this month, inside the reservation's transaction.

        Raises:
            BotBudgetSpent: it does not fit; the caller's transaction rolls back.
        """
        if self.cap_mc is None:
            return
        # Every reservation in the fleet takes its turn here while a cap is set: reading the
        # total and writing the reservation must not interleave with another's.
        await tx.lock(_BUDGET_LOCK)
        used = await self._refuse_if_over(tx, need_mc, month_start, resets_at)
        if self._worth_checking(month_start, used + need_mc):
            await tx.notify(BUDGET_CHANNEL, "")

    async def check(self, reads: Reads, need_mc: int, month_start: int, resets_at: int) -> None:
        """The test `reserve_in` makes, holding nothing (no lock: a later reservation still
        decides). Raises BotBudgetSpent."""
        if self.cap_mc is not None:
            await self._refuse_if_over(reads, need_mc, month_start, resets_at)

    async def grew_in(self, tx: Tx) -> None:
        """A settlement charged more than was reserved: the total may have crossed a
        threshold (the provider's cost is not known before)."""
        if self.cap_mc is None:
            return
        month_start = self._schedule.start(Period.MONTH, self._clock())
        if any((month_start, percent) not in self._sent for percent in ALERT_PERCENTS):
            await tx.notify(BUDGET_CHANNEL, "")

    async def _refuse_if_over(
        self, reads: Reads, need_mc: int, month_start: int, resets_at: int
    ) -> int:
        assert self.cap_mc is not None
        used = int(await reads.fetch_value(_USED_SQL, (month_start,)))
        if used + need_mc > self.cap_mc:
            self._refused_in = month_start
            # On SQLite this runs on the database's thread: wake the watcher from the loop.
            if self._loop is not None:
                self._loop.call_soon_threadsafe(self.nudge)
            raise BotBudgetSpent(resets_at)
        return used

    def _worth_checking(self, month_start: int, used_mc: int) -> bool:
        """Whether `used_mc` reaches a threshold whose warning is not known to be sent."""
        assert self.cap_mc is not None
        return any(
            used_mc * 100 >= self.cap_mc * percent and (month_start, percent) not in self._sent
            for percent in ALERT_PERCENTS
        )

    # ----------------------------------------------------------------- the watcher
    async def used(self, now: float | None = None) -> int:
        """Millicredits the whole bot has used (and holds for running jobs) this month."""
        now = self._clock() if now is None else now
        start = self._schedule.start(Period.MONTH, now)
        return int(await self._db.fetch_value(_USED_SQL, (start,)))

    def nudge(self) -> None:
        """Check the thresholds soon; a burst of nudges runs one check after another, never
        two at once."""
        if self.cap_mc is None or not self._running:
            return
        self._wanted = True
        if self._checker is None or self._checker.done():
            self._checker = asyncio.create_task(self._check_while_wanted())

    async def _check_while_wanted(self) -> None:
        while self._wanted:
            self._wanted = False
            try:
                await self.check_thresholds()
            except Exception:
                log.warning("checking the bot's monthly budget failed", exc_info=True)

    async def check_thresholds(self) -> BudgetAlert | None:
        """Warn the owner of each threshold reached this month that no process warned of
        yet; returns the warning sent, if any (the highest threshold newly claimed)."""
        cap = self.cap_mc
        if cap is None:
            return None
        now = self._clock()
        start = self._schedule.start(Period.MONTH, now)
        used = int(await self._db.fetch_value(_USED_SQL, (start,)))
        reached = {percent for percent in ALERT_PERCENTS if used * 100 >= cap * percent}
        if self._refused_in == start:
            reached.add(100)
        fresh = sorted(percent for percent in reached if (start, percent) not in self._sent)
        if not fresh:
            return None

        async def claim(tx: Tx) -> list[int]:
            claimed = []
            for percent in fresh:
                inserted = await tx.execute(
                    "INSERT INTO bot_budget_alerts (month_start, percent, used_mc, cap_mc,"
                    " sent_at) VALUES (?,?,?,?,?) ON CONFLICT (month_start, percent) DO NOTHING",
                    (start, percent, used, cap, now),
                )
                if inserted:
                    claimed.append(percent)
            return claimed

        claimed = await self._db.run(claim)
        self._sent.update((start, percent) for percent in fresh)
        if not claimed:
            return None  # another process (or this one before a restart) warned already
        alert = BudgetAlert(max(claimed), used, cap, self._schedule.end(Period.MONTH, now))
        log.warning(
            "budget warning (%d%%): the bot used %s of its %s credits this month"
            " (BOT_MONTHLY_CREDITS)",
            alert.percent,
            format_credits(used),
            format_credits(cap),
        )
        for sink in self._sinks:
            try:
                await sink(alert)
            except Exception:
                log.warning("could not send the owner the budget warning", exc_info=True)
        return alert
