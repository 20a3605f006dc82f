"""The ledger on its own: windows and resets with an injected clock, the three levels of
allowance combined, exact refusals, and settlement that happens once per job."""

from __future__ import annotations

import datetime as dt
import io
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from PIL import Image

from bot.errors import InvalidRequest, SettingsError
from bot.ledger import (
    Ledger,
    Metric,
    Period,
    QuotaExceeded,
    QuotaPolicy,
    ResetSchedule,
    Scope,
    credits_to_mc,
    format_credits,
    parse_amount,
    parse_reset_time,
    unlimited_limits,
)
from bot.ledger.reports import export_csv, export_range, server_report
from bot.settings import load_settings
from bot.storage.db import Database, open_database
from cogs.usage import format_dollars
from cogs.usage_chart import daily_spend_png

UTC = dt.UTC
GUILD = 42
ALICE, BOB, MOD = 1001, 1002, 9
HELPERS, VIPS = 500, 501


def at(text: str) -> float:
    return dt.datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def ts(text: str) -> int:
    return int(at(text))


class Clock:
    def __init__(self, start: str) -> None:
        self.now = at(start)

    def __call__(self) -> float:
        return self.now

    def set(self, text: str) -> None:
        self.now = at(text)


def policy(
    *,
    reset: str = "00:00",
    user: dict[tuple[Period, Metric], int | None] | None = None,
    guild: dict[tuple[Period, Metric], int | None] | None = None,
) -> QuotaPolicy:
    return QuotaPolicy(
        ResetSchedule(parse_reset_time(reset)),
        user={**unlimited_limits(), **(user or {})},
        guild={**unlimited_limits(), **(guild or {})},
    )


DAY_IMAGES = (Period.DAY, Metric.IMAGES)
DAY_CREDITS = (Period.DAY, Metric.CREDITS)
WEEK_IMAGES = (Period.WEEK, Metric.IMAGES)
MONTH_IMAGES = (Period.MONTH, Metric.IMAGES)
MONTH_CREDITS = (Period.MONTH, Metric.CREDITS)


@pytest.fixture
async def mem_db(db: Database) -> AsyncIterator[Database]:
    yield db  # the suite's store: SQLite, or PostgreSQL when the suite runs on it


async def reserve(
    ledger: Ledger,
    job_id: str,
    *,
    user: int = ALICE,
    guild: int | None = GUILD,
    roles: tuple[int, ...] = (),
    credits: float = 3.0,
    images: int = 1,
    variant: str = "pro",
) -> None:
    await ledger.db.run(
        lambda conn: ledger.reserve(
            conn,
            job_id=job_id,
            guild_id=guild,
            user_id=user,
            role_ids=roles,
            variant=variant,
            credits=credits,
            images=images,
        )
    )


async def charge(
    ledger: Ledger,
    job_id: str,
    credits: float | None,
    images: int | None = None,
    state: str = "ready",
) -> bool:
    return await ledger.db.run(
        lambda conn: ledger.charge(conn, job_id, credits=credits, images=images, settled_by=state)
    )


async def refund(ledger: Ledger, job_id: str, state: str = "failed") -> bool:
    return await ledger.db.run(lambda conn: ledger.refund(conn, job_id, settled_by=state))


async def window(
    ledger: Ledger, period: Period, user: int = ALICE, roles: tuple[int, ...] = ()
) -> tuple[int, int, int | None, int | None]:
    """(images used, mc used, images left, mc left) as /usage would show them."""
    usage = await ledger.member_usage(GUILD, user, roles)
    w = next(w for w in usage.windows if w.period is period)
    return w.images, w.credits_mc, w.remaining_images, w.remaining_mc


async def ledger_rows(db: Database) -> list[tuple[str, str, int, int]]:
    rows = await db.fetch_all(
        "SELECT job_id, status, credits_mc, images FROM ledger ORDER BY reserved_at, job_id"
    )
    return [(r["job_id"], r["status"], r["credits_mc"], r["images"]) for r in rows]


# --------------------------------------------------------------------------- windows
@pytest.mark.parametrize(
    ("reset", "now", "period", "start", "end"),
    [
        ("00:00", "2025-06-04 12:00", Period.DAY, "2025-06-04 00:00", "2025-06-05 00:00"),
        ("00:00", "2025-06-04 12:00", Period.WEEK, "2025-06-02 00:00", "2025-06-09 00:00"),
        ("00:00", "2025-06-04 12:00", Period.MONTH, "2025-06-01 00:00", "2025-07-01 00:00"),
        ("00:00", "2025-12-31 23:59", Period.MONTH, "2025-12-01 00:00", "2026-01-01 00:00"),
        # Before the day's reset time we are still in yesterday's window …
        ("06:30", "2025-06-04 06:29", Period.DAY, "2025-06-03 06:30", "2025-06-04 06:30"),
        ("06:30", "2025-06-04 06:30", Period.DAY, "2025-06-04 06:30", "2025-06-05 06:30"),
        # … so early on a Monday it is still last week, and early on the 1st last month.
        ("06:30", "2025-06-09 03:00", Period.WEEK, "2025-06-02 06:30", "2025-06-09 06:30"),
        ("06:30", "2025-06-09 07:00", Period.WEEK, "2025-06-09 06:30", "2025-06-16 06:30"),
        ("06:30", "2025-07-01 05:00", Period.MONTH, "2025-06-01 06:30", "2025-07-01 06:30"),
        ("00:00", "2024-02-29 10:00", Period.MONTH, "2024-02-01 00:00", "2024-03-01 00:00"),
    ],
)
def test_windows_start_and_reset_at_the_stated_utc_time(
    reset: str, now: str, period: Period, start: str, end: str
) -> None:
    schedule = ResetSchedule(parse_reset_time(reset))
    assert schedule.start(period, at(now)) == ts(start)
    assert schedule.end(period, at(now)) == ts(end)


@pytest.mark.parametrize("text", ["24:00", "7", "ab:cd", "12:60", ""])
def test_a_bad_reset_time_is_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_reset_time(text)


async def test_the_daily_allowance_resets_at_midnight_but_the_monthly_one_does_not(
    mem_db: Database,
) -> None:
    clock = Clock("2025-06-04 22:00")
    ledger = Ledger(mem_db, policy(user={DAY_IMAGES: 2, MONTH_IMAGES: 3}), clock=clock)
    await reserve(ledger, "a")
    await reserve(ledger, "b")
    with pytest.raises(QuotaExceeded):
        await reserve(ledger, "c")
    clock.set("2025-06-04 23:59")
    with pytest.raises(QuotaExceeded):
        await reserve(ledger, "c")
    clock.set("2025-06-05 00:00")
    assert await window(ledger, Period.DAY) == (0, 0, 2, None)
    assert await window(ledger, Period.MONTH) == (2, 6000, 1, None)
    await reserve(ledger, "c")  # a new day: the daily allowance is back, the month has 1 left
    with pytest.raises(QuotaExceeded) as refused:
        await reserve(ledger, "d")
    assert refused.value.breach.period is Period.MONTH
    clock.set("2025-07-01 00:00")
    await reserve(ledger, "d")
    assert [row[0] for row in await ledger_rows(mem_db)] == ["a", "b", "c", "d"]


async def test_a_job_counts_in_the_window_it_was_requested_in_even_if_settled_later(
    mem_db: Database,
) -> None:
    clock = Clock("2025-06-04 23:59")
    ledger = Ledger(mem_db, policy(user={DAY_CREDITS: credits_to_mc(10)}), clock=clock)
    await reserve(ledger, "late", credits=3)
    clock.set("2025-06-05 00:01")
    assert await charge(ledger, "late", 4.5)
    assert await window(ledger, Period.DAY) == (0, 0, None, 10_000)  # today untouched
    clock.set("2025-06-04 23:59:30")
    assert await window(ledger, Period.DAY) == (1, 4500, None, 5500)  # yesterday's charge


# --------------------------------------------------------------------------- refusals
async def test_over_the_limit_is_refused_with_the_limit_what_is_left_and_the_reset(
    mem_db: Database,
) -> None:
    clock = Clock("2025-06-03 15:00")  # a Tuesday
    ledger = Ledger(
        mem_db, policy(user={DAY_IMAGES: 2, DAY_CREDITS: credits_to_mc(100)}), clock=clock
    )
    await reserve(ledger, "a")
    await reserve(ledger, "b", credits=1.4)
    before = await ledger_rows(mem_db)
    with pytest.raises(QuotaExceeded) as refused:
        await reserve(ledger, "c")
    assert str(refused.value) == (
        "This request would go over your daily image allowance (2 images a day). "
        "Left today: 0 images and 95.6 credits; it needs 1 image and 3 credits. "
        f"It resets at 00:00 UTC on Wednesday 4 June (<t:{ts('2025-06-04 00:00')}:R>)."
    )
    assert isinstance(refused.value, InvalidRequest)  # shown privately by the error paths
    assert await ledger_rows(mem_db) == before  # nothing was written
    assert await window(ledger, Period.DAY) == (2, 4400, 0, 95_600)


async def test_a_credit_limit_counts_the_estimate_of_the_request_itself(mem_db: Database) -> None:
    ledger = Ledger(
        mem_db, policy(user={DAY_CREDITS: credits_to_mc(10)}), clock=Clock("2025-06-04 12:00")
    )
    await reserve(ledger, "a", credits=7)
    with pytest.raises(QuotaExceeded) as refused:
        await reserve(ledger, "b", credits=3.01)
    assert "your daily credit allowance (10 credits a day)" in str(refused.value)
    assert "Left today: 3 credits; it needs 1 image and 3.01 credits." in str(refused.value)
    await reserve(ledger, "b", credits=3)  # exactly up to the limit is allowed


async def test_the_refusal_names_the_limit_that_lifts_last(mem_db: Database) -> None:
    ledger = Ledger(
        mem_db,
        policy(user={DAY_IMAGES: 1}, guild={MONTH_CREDITS: credits_to_mc(3)}),
        clock=Clock("2025-06-04 12:00"),
    )
    await reserve(ledger, "a")
    with pytest.raises(QuotaExceeded) as refused:
        await reserve(ledger, "b")  # over both the member's day and the server's month
    assert str(refused.value) == (
        "This request would go over this server's monthly credit budget (3 credits a month). "
        "Left this month: 0 credits; it needs 1 image and 3 credits. "
        f"It resets at 00:00 UTC on Tuesday 1 July (<t:{ts('2025-07-01 00:00')}:R>)."
    )


async def test_zero_means_nothing_and_unlimited_means_no_limit(mem_db: Database) -> None:
    ledger = Ledger(mem_db, policy(user={DAY_IMAGES: 0}), clock=Clock("2025-06-04 12:00"))
    with pytest.raises(QuotaExceeded):
        await reserve(ledger, "a")
    await ledger.admin.set_limit(GUILD, MOD, Scope.USER, ALICE, Period.DAY, Metric.IMAGES, None)
    for n in range(50):
        await reserve(ledger, f"job{n}")
    assert await window(ledger, Period.DAY) == (50, 150_000, None, None)


# --------------------------------------------------------------------------- levels
async def test_the_best_of_a_members_roles_applies_and_unset_roles_are_ignored(
    mem_db: Database,
) -> None:
    ledger = Ledger(mem_db, policy(user={DAY_IMAGES: 10}), clock=Clock("2025-06-04 12:00"))
    await ledger.admin.set_limit(
        GUILD, MOD, Scope.ROLE, GUILD, Period.DAY, Metric.IMAGES, 1
    )  # @everyone
    await ledger.admin.set_limit(GUILD, MOD, Scope.ROLE, HELPERS, Period.DAY, Metric.IMAGES, 3)
    other_role = 777  # has no allowance: it neither limits nor frees anyone
    # Alice has the Helpers role: the better of @everyone (1) and Helpers (3).
    for n in range(3):
        await reserve(ledger, f"a{n}", roles=(HELPERS, other_role))
    with pytest.raises(QuotaExceeded) as refused:
        await reserve(ledger, "a3", roles=(HELPERS, other_role))
    assert refused.value.breach.scope is Scope.ROLE
    assert "the daily image allowance for your role <@&500> (3 images a day)" in str(refused.value)
    # Bob has only @everyone (not even listed by the caller): 1 image a day.
    await reserve(ledger, "b0", user=BOB, roles=(other_role,))
    with pytest.raises(QuotaExceeded) as refused:
        await reserve(ledger, "b1", user=BOB, roles=(other_role,))
    assert "the daily image allowance for everyone on this server (1 image a day)" in str(
        refused.value
    )
    # The member's own allowance still applies on top of a generous role.
    await ledger.admin.set_limit(GUILD, MOD, Scope.ROLE, VIPS, Period.DAY, Metric.IMAGES, None)
    await ledger.admin.set_limit(GUILD, MOD, Scope.USER, BOB, Period.DAY, Metric.IMAGES, 2)
    await reserve(ledger, "b1", user=BOB, roles=(VIPS,))
    with pytest.raises(QuotaExceeded) as refused:
        await reserve(ledger, "b2", user=BOB, roles=(VIPS,))
    assert refused.value.breach.scope is Scope.USER
    assert await window(ledger, Period.DAY, BOB, (VIPS,)) == (2, 6000, 0, None)


async def test_role_allowances_and_the_server_budget_combine(mem_db: Database) -> None:
    ledger = Ledger(mem_db, policy(guild={DAY_IMAGES: 5}), clock=Clock("2025-06-04 12:00"))
    await ledger.admin.set_limit(GUILD, MOD, Scope.ROLE, HELPERS, Period.DAY, Metric.IMAGES, 3)
    for n in range(3):
        await reserve(ledger, f"a{n}", roles=(HELPERS,))
    with pytest.raises(QuotaExceeded) as refused:
        await reserve(ledger, "a3", roles=(HELPERS,))
    assert refused.value.breach.scope is Scope.ROLE  # Alice's role allowance is used up
    # Bob has the role's 3 of his own, but the server has only 2 left of its 5.
    assert await window(ledger, Period.DAY, BOB, (HELPERS,)) == (0, 0, 2, None)
    await reserve(ledger, "b0", user=BOB, roles=(HELPERS,))
    await reserve(ledger, "b1", user=BOB, roles=(HELPERS,))
    with pytest.raises(QuotaExceeded) as refused:
        await reserve(ledger, "b2", user=BOB, roles=(HELPERS,))
    assert str(refused.value).startswith(
        "This request would go over this server's daily image budget (5 images a day). "
        "Left today: 0 images; it needs 1 image and 3 credits."
    )
    # Another server's budget is its own.
    await reserve(ledger, "elsewhere", user=BOB, guild=43, roles=(HELPERS,))


async def test_direct_messages_have_only_the_members_own_allowance(mem_db: Database) -> None:
    ledger = Ledger(
        mem_db, policy(user={DAY_IMAGES: 1}, guild={DAY_IMAGES: 0}), clock=Clock("2025-06-04 12:00")
    )
    await reserve(ledger, "dm", guild=None)
    with pytest.raises(QuotaExceeded) as refused:
        await reserve(ledger, "dm2", guild=None)
    assert refused.value.breach.scope is Scope.USER


async def test_a_grant_raises_the_members_allowance_for_this_window_only(
    mem_db: Database,
) -> None:
    clock = Clock("2025-06-04 12:00")
    ledger = Ledger(mem_db, policy(user={DAY_IMAGES: 1}, guild={DAY_IMAGES: 3}), clock=clock)
    await ledger.admin.set_limit(GUILD, MOD, Scope.ROLE, HELPERS, Period.DAY, Metric.IMAGES, 1)
    await reserve(ledger, "a0", roles=(HELPERS,))
    change = await ledger.admin.grant(GUILD, MOD, ALICE, Period.DAY, Metric.IMAGES, 5)
    assert change.summary == (
        "Gave <@1001> 5 images more today; the extra lapses at the reset at 00:00 UTC on "
        f"Thursday 5 June (<t:{ts('2025-06-05 00:00')}:R>)."
    )
    assert await window(ledger, Period.DAY, roles=(HELPERS,)) == (1, 3000, 2, None)
    await reserve(ledger, "a1", roles=(HELPERS,))
    await reserve(ledger, "a2", roles=(HELPERS,))
    with pytest.raises(QuotaExceeded) as refused:  # the server budget is not raised by grants
        await reserve(ledger, "a3", roles=(HELPERS,))
    assert refused.value.breach.scope is Scope.GUILD
    clock.set("2025-06-05 00:00")
    await reserve(ledger, "b0", roles=(HELPERS,))
    with pytest.raises(QuotaExceeded):  # the grant lapsed with yesterday
        await reserve(ledger, "b1", roles=(HELPERS,))


# --------------------------------------------------------------------------- settlement
async def test_a_charge_replaces_the_estimate_with_the_providers_cost(mem_db: Database) -> None:
    ledger = Ledger(
        mem_db, policy(user={DAY_CREDITS: credits_to_mc(10)}), clock=Clock("2025-06-04 12:00")
    )
    await reserve(ledger, "a", credits=3)
    assert await window(ledger, Period.DAY) == (1, 3000, None, 7000)
    assert await charge(ledger, "a", 4.45)
    assert await window(ledger, Period.DAY) == (1, 4450, None, 5550)
    await reserve(ledger, "b", credits=3)
    assert await charge(ledger, "b", None)  # no cost reported: the estimate stands
    assert await ledger_rows(mem_db) == [("a", "charged", 4450, 1), ("b", "charged", 3000, 1)]


@pytest.mark.parametrize("state", ["failed", "moderated", "cancelled"])
async def test_a_refund_returns_everything_and_settles_only_once(
    mem_db: Database, state: str
) -> None:
    ledger = Ledger(mem_db, policy(user={DAY_IMAGES: 1}), clock=Clock("2025-06-04 12:00"))
    await reserve(ledger, "a")
    assert await refund(ledger, "a", state)
    assert await window(ledger, Period.DAY) == (0, 0, 1, None)
    assert not await refund(ledger, "a", state)
    assert not await charge(ledger, "a", 3.0)  # a late charge cannot revive it
    assert await window(ledger, Period.DAY) == (0, 0, 1, None)
    row = await mem_db.fetch_one("SELECT * FROM ledger WHERE job_id = 'a'")
    assert row is not None
    assert (row["status"], row["settled_by"], row["charged_mc"]) == ("refunded", state, 0)
    await reserve(ledger, "b")  # the image is available again


async def test_a_charged_job_is_never_charged_or_refunded_again(mem_db: Database) -> None:
    ledger = Ledger(mem_db, policy(), clock=Clock("2025-06-04 12:00"))
    await reserve(ledger, "a", credits=3)
    assert await charge(ledger, "a", 3.5, state="ready")
    assert not await charge(ledger, "a", 3.5, state="delivered")
    assert not await refund(ledger, "a", "failed")  # e.g. the image could not be posted
    assert await window(ledger, Period.DAY) == (1, 3500, None, None)
    assert not await charge(ledger, "unknown-job", 1.0)  # a job from before the ledger


async def test_settlement_survives_a_restart_exactly_once(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite3"
    clock = Clock("2025-06-04 12:00")
    first = await open_database(path)
    await reserve(Ledger(first, policy(), clock=clock), "a", credits=3)
    await reserve(Ledger(first, policy(), clock=clock), "b", credits=3)
    await first.close()  # the process stops with both jobs in flight

    second = await open_database(path)
    ledger = Ledger(second, policy(user={DAY_CREDITS: credits_to_mc(10)}), clock=clock)
    assert await window(ledger, Period.DAY) == (2, 6000, None, 4000)
    assert await charge(ledger, "a", 2.5)
    assert await refund(ledger, "b")
    await second.close()

    third = await open_database(path)  # a second restart replays nothing
    ledger = Ledger(third, policy(user={DAY_CREDITS: credits_to_mc(10)}), clock=clock)
    assert not await charge(ledger, "a", 2.5)
    assert not await refund(ledger, "b")
    assert await window(ledger, Period.DAY) == (1, 2500, None, 7500)
    await third.close()


async def test_sums_of_fractional_credits_are_exact(mem_db: Database) -> None:
    ledger = Ledger(
        mem_db, policy(user={DAY_CREDITS: credits_to_mc(1)}), clock=Clock("2025-06-04 12:00")
    )
    for n in range(10):  # 10 × 0.1 is 0.9999999999999999 in floating point
        await reserve(ledger, f"j{n}", credits=0.1)
    assert await window(ledger, Period.DAY) == (10, 1000, None, 0)
    with pytest.raises(QuotaExceeded):
        await reserve(ledger, "one-too-many", credits=0.001)


def test_amount_formatting_and_parsing() -> None:
    assert [format_credits(mc) for mc in (0, 1, 1400, 2500, 100_000, -1500)] == [
        "0",
        "0.001",
        "1.4",
        "2.5",
        "100",
        "-1.5",
    ]
    assert format_dollars(126_000) == "$1.26"
    assert parse_amount(Metric.IMAGES, -1) is None
    assert parse_amount(Metric.CREDITS, 2.5) == 2500
    with pytest.raises(InvalidRequest, match="whole number"):
        parse_amount(Metric.IMAGES, 2.5)
    with pytest.raises(InvalidRequest, match="0 or more"):
        parse_amount(Metric.CREDITS, -3)


# --------------------------------------------------------------------------- moderators
async def test_every_change_is_audited_with_who_and_when(mem_db: Database) -> None:
    clock = Clock("2025-06-04 12:00")
    ledger = Ledger(mem_db, policy(user={DAY_IMAGES: 25}), clock=clock)
    first = await ledger.admin.set_limit(
        GUILD, MOD, Scope.USER, ALICE, Period.DAY, Metric.IMAGES, 10
    )
    assert first.summary == (
        "Set the daily image allowance of <@1001> to 10 images (was 25 images, the default)."
    )
    clock.set("2025-06-04 12:05")
    second = await ledger.admin.set_limit(
        GUILD, MOD, Scope.ROLE, HELPERS, Period.WEEK, Metric.CREDITS, credits_to_mc(50)
    )
    assert second.summary == (
        "Set the weekly credit allowance for members with <@&500> to 50 credits "
        "(was no limit from this role)."
    )
    third = await ledger.admin.set_limit(
        GUILD, MOD, Scope.GUILD, 0, Period.MONTH, Metric.CREDITS, None
    )
    assert third.summary == (
        "Set this server's monthly credit budget to unlimited (was unlimited, the default)."
    )
    await ledger.admin.grant(GUILD, MOD, ALICE, Period.DAY, Metric.CREDITS, 2500)
    reset = await ledger.admin.reset(GUILD, MOD + 1, Scope.USER, ALICE)
    assert reset.summary == "Reset <@1001> to the defaults: removed 1 override and 1 grant."
    again = await ledger.admin.reset(GUILD, MOD + 1, Scope.USER, ALICE)
    assert again.summary == "Nothing to reset: <@1001> already has the defaults."

    rows = await mem_db.fetch_all("SELECT * FROM quota_audit ORDER BY id")
    assert [(r["actor_id"], r["action"], r["scope"], r["target_id"], r["at"]) for r in rows] == [
        (MOD, "set", "user", ALICE, at("2025-06-04 12:00")),
        (MOD, "set", "role", HELPERS, at("2025-06-04 12:05")),
        (MOD, "set", "guild", GUILD, at("2025-06-04 12:05")),
        (MOD, "grant", "user", ALICE, at("2025-06-04 12:05")),
        (MOD + 1, "reset", "user", ALICE, at("2025-06-04 12:05")),
        (MOD + 1, "reset", "user", ALICE, at("2025-06-04 12:05")),
    ]
    assert [r["summary"] for r in rows[:3]] == [first.summary, second.summary, third.summary]
    assert (rows[0]["before"], rows[0]["after"]) == ("25 images, the default", "10 images")
    # Every change is also in the server's one audit log, filed under the member or role.
    audited = await mem_db.fetch_all(
        "SELECT actor_id, action, target_id, at, detail FROM audit_log ORDER BY id"
    )
    assert [tuple(a) for a in audited] == [
        (r["actor_id"], f"quota {r['action']}", None if r["scope"] == "guild" else r["target_id"],
         r["at"], r["summary"])
        for r in rows
    ]  # fmt: skip
    assert [(o.scope, o.target_id) for o in await ledger.admin.overrides(GUILD)] == [
        (Scope.GUILD, GUILD),
        (Scope.ROLE, HELPERS),
    ]
    assert await window(ledger, Period.DAY) == (0, 0, 25, None)  # back on the default


async def test_moderator_amounts_are_checked(mem_db: Database) -> None:
    ledger = Ledger(mem_db, policy(), clock=Clock("2025-06-04 12:00"))
    with pytest.raises(InvalidRequest):
        await ledger.admin.set_limit(GUILD, MOD, Scope.USER, ALICE, Period.DAY, Metric.IMAGES, -5)
    with pytest.raises(InvalidRequest):
        await ledger.admin.grant(GUILD, MOD, ALICE, Period.DAY, Metric.IMAGES, 0)
    assert await mem_db.fetch_value("SELECT count(*) FROM quota_audit") == 0
    assert await mem_db.fetch_value("SELECT count(*) FROM audit_log") == 0


# --------------------------------------------------------------------------- reports
async def test_server_report_totals_by_model_and_member_and_daily_spend(
    mem_db: Database,
) -> None:
    clock = Clock("2025-06-02 09:00")
    ledger = Ledger(mem_db, policy(guild={MONTH_CREDITS: credits_to_mc(100)}), clock=clock)
    await reserve(ledger, "a", credits=3)
    await charge(ledger, "a", 3.0)
    clock.set("2025-06-04 09:00")
    await reserve(ledger, "b", user=BOB, credits=1.4, variant="klein-4b")
    await charge(ledger, "b", 1.4)
    await reserve(ledger, "c", credits=7, variant="max")
    await refund(ledger, "c", "moderated")
    await reserve(ledger, "d", credits=3)  # still running: it counts as held

    report = await server_report(ledger, GUILD, Period.MONTH, days=5)
    assert (report.images, report.credits_mc) == (3, 7400)
    assert (report.budget_images, report.budget_mc) == (None, 92_600)
    assert [(t.key, t.images, t.credits_mc) for t in report.by_variant] == [
        ("pro", 2, 6000),
        ("klein-4b", 1, 1400),
        ("max", 0, 0),
    ]
    assert [(t.key, t.images, t.credits_mc) for t in report.by_user] == [
        (ALICE, 2, 6000),
        (BOB, 1, 1400),
    ]
    assert report.daily == (
        (ts("2025-05-31 00:00"), 0),
        (ts("2025-06-01 00:00"), 0),
        (ts("2025-06-02 00:00"), 3000),
        (ts("2025-06-03 00:00"), 0),
        (ts("2025-06-04 00:00"), 4400),
    )
    png = daily_spend_png(report.daily, "Daily spend")
    image = Image.open(io.BytesIO(png))
    assert (image.format, image.size) == ("PNG", (900, 380))


async def test_csv_export_lists_the_servers_ledger_for_the_dates(mem_db: Database) -> None:
    clock = Clock("2025-06-01 10:00")
    ledger = Ledger(mem_db, policy(), clock=clock)
    await reserve(ledger, "may", credits=3)
    clock.set("2025-06-02 10:00")
    await reserve(ledger, "june", credits=3)
    clock.set("2025-06-02 10:00:07")
    await charge(ledger, "june", 3.15)
    await reserve(ledger, "other-server", guild=43)
    clock.set("2025-06-03 00:00")
    await reserve(ledger, "too-late", credits=1.4)

    first, last = export_range("2025-06-02", "2025-06-02", clock())
    export = await export_csv(ledger, GUILD, first, last)
    assert export.filename == "ledger-42-2025-06-02-2025-06-02.csv"
    assert export.rows == 1
    assert export.data.decode().splitlines() == [
        "job_id,reserved_at,user_id,variant,status,settled_by,settled_at,job_state,"
        "reserved_credits,charged_credits,reserved_images,charged_images,provider",
        "june,2025-06-02T10:00:00+00:00,1001,pro,charged,ready,2025-06-02T10:00:07+00:00,,"
        "3,3.15,1,1,bfl",
    ]
    assert export_range(None, None, at("2025-06-17 08:00")) == (
        dt.date(2025, 6, 1),
        dt.date(2025, 6, 17),
    )
    with pytest.raises(InvalidRequest, match="look like"):
        export_range("June 1st", None, clock())
    with pytest.raises(InvalidRequest, match="after the end"):
        export_range("2025-06-03", "2025-06-01", clock())


# --------------------------------------------------------------------------- settings
def test_allowance_settings_take_numbers_zero_and_unlimited() -> None:
    settings = load_settings(
        discord_token="x",
        default_user_daily_images="unlimited",
        default_user_daily_credits="0",
        default_guild_monthly_credits="-1",
        default_guild_weekly_images="40",
        quota_reset_time="6:30",
    )
    quota = QuotaPolicy.from_settings(settings)
    assert quota.user[DAY_IMAGES] is None
    assert quota.user[DAY_CREDITS] == 0
    assert quota.user[MONTH_CREDITS] == 1_000_000  # the default: 1000 credits
    assert quota.guild[MONTH_CREDITS] is None
    assert quota.guild[(Period.WEEK, Metric.IMAGES)] == 40
    assert quota.schedule.describe() == "06:30 UTC"
    defaults = QuotaPolicy.from_settings(load_settings(discord_token="x"))
    assert {key: value for key, value in defaults.user.items() if value is not None} == {
        DAY_IMAGES: 25,
        DAY_CREDITS: 100_000,
        MONTH_CREDITS: 1_000_000,
    }
    assert {key: value for key, value in defaults.guild.items() if value is not None} == {
        MONTH_CREDITS: 10_000_000
    }


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            {"default_user_daily_images": "lots"},
            "DEFAULT_USER_DAILY_IMAGES Value error, must be a number or 'unlimited'",
        ),
        (
            {"default_guild_monthly_credits": -5},
            "DEFAULT_GUILD_MONTHLY_CREDITS Input should be greater than or equal to 0",
        ),
        (
            {"quota_reset_time": "25:00"},
            "QUOTA_RESET_TIME Value error, must be a time between 00:00 and 23:59",
        ),
    ],
)
def test_bad_allowance_settings_name_the_setting(
    overrides: dict[str, object], message: str
) -> None:
    with pytest.raises(SettingsError) as error:
        load_settings(discord_token="x", **overrides)
    assert str(error.value) == message


def test_export_dates_at_the_edges_of_the_calendar_get_a_clear_answer() -> None:
    now = at("2025-06-17 08:00")
    # A month asked for in full before it ends: what exists so far.
    assert export_range("2025-06-01", "2025-06-30", now) == (
        dt.date(2025, 6, 1),
        dt.date(2025, 6, 17),
    )
    assert export_range("2025-06-10", "9999-12-31", now) == (
        dt.date(2025, 6, 10),
        dt.date(2025, 6, 17),
    )
    assert export_range(None, "9999-12-31", now) == (dt.date(2025, 6, 1), dt.date(2025, 6, 17))
    with pytest.raises(InvalidRequest, match=r"start date is after today \(2025-06-17\)"):
        export_range("9999-12-31", "9999-12-31", now)
    with pytest.raises(InvalidRequest, match="at most"):
        export_range("0001-01-01", None, now)
