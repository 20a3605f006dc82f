"""Read-only views of the ledger for moderators: server totals, daily spend, CSV export."""

from __future__ import annotations

import csv
import datetime as dt
import io
from dataclasses import dataclass

from bot.catalogue import CATALOGUE
from bot.errors import InvalidRequest
from bot.ledger.accounts import Ledger
from bot.ledger.policy import Metric, Scope, format_credits
from bot.periods import UTC, Period
from bot.storage.rows import from_row

DAY = 86_400
MAX_EXPORT_DAYS = 366
CSV_COLUMNS = (
    "job_id",
    "reserved_at",
    "user_id",
    "variant",
    "status",
    "settled_by",
    "settled_at",
    "job_state",
    "reserved_credits",
    "charged_credits",
    "reserved_images",
    "charged_images",
    "provider",
)


@dataclass(frozen=True)
class Total:
    key: str | int  # a variant key or a user id
    images: int
    credits_mc: int


@dataclass(frozen=True)
class ServerReport:
    guild_id: int
    period: Period
    start: int
    resets_at: int
    images: int
    credits_mc: int
    budget_images: int | None  # left in the server budget this window (None: no limit)
    budget_mc: int | None
    by_variant: tuple[Total, ...]
    by_user: tuple[Total, ...]
    daily: tuple[tuple[int, int], ...]  # (day start, millicredits), oldest first


async def server_report(
    ledger: Ledger,
    guild_id: int,
    period: Period,
    *,
    days: int = 30,
    top: int = 15,
    now: float | None = None,
) -> ServerReport:
    """Totals for the current window of `period`, and daily spend over the last `days` days.
    Amounts count charges plus reservations of jobs still running (as the quotas do)."""
    now = ledger.now() if now is None else now
    schedule = ledger.policy.schedule
    start, end = schedule.start(period, now), schedule.end(period, now)
    db = ledger.db
    totals = await db.fetch_one(
        "SELECT images, credits_mc FROM usage_totals"
        " WHERE guild_id = ? AND user_id = 0 AND period = ? AND period_start = ?",
        (guild_id, period.value, start),
    )
    by_variant = await db.fetch_all(
        "SELECT variant AS key, SUM(images) AS images, SUM(credits_mc) AS credits_mc"
        " FROM ledger WHERE guild_id = ? AND reserved_at >= ? AND reserved_at < ?"
        " GROUP BY variant ORDER BY credits_mc DESC, images DESC, variant",
        (guild_id, start, end),
    )
    by_user = await db.fetch_all(
        "SELECT user_id AS key, SUM(images) AS images, SUM(credits_mc) AS credits_mc"
        " FROM ledger WHERE guild_id = ? AND reserved_at >= ? AND reserved_at < ?"
        " GROUP BY user_id ORDER BY credits_mc DESC, images DESC, user_id LIMIT ?",
        (guild_id, start, end, top),
    )
    today = schedule.start(Period.DAY, now)
    first_day = today - (days - 1) * DAY
    spent = {
        row["day_start"]: row["mc"]
        for row in await db.fetch_all(
            "SELECT day_start, SUM(credits_mc) AS mc FROM ledger"
            " WHERE guild_id = ? AND reserved_at >= ? AND day_start >= ? GROUP BY day_start",
            (guild_id, first_day, first_day),
        )
    }
    # The server budget left: the guild level of a view for nobody in particular.
    state = await ledger.state(guild_id, 0, now=now)
    return ServerReport(
        guild_id=guild_id,
        period=period,
        start=start,
        resets_at=end,
        images=totals["images"] if totals else 0,
        credits_mc=totals["credits_mc"] if totals else 0,
        budget_images=state.remaining_for(Scope.GUILD, (period, Metric.IMAGES)),
        budget_mc=state.remaining_for(Scope.GUILD, (period, Metric.CREDITS)),
        by_variant=tuple(from_row(Total, r) for r in by_variant),
        by_user=tuple(from_row(Total, r) for r in by_user),
        daily=tuple((day, spent.get(day, 0)) for day in range(first_day, today + 1, DAY)),
    )


async def month_spend_by_server(ledger: Ledger, *, now: float | None = None) -> dict[int, Total]:
    """Every server's total for the current month window (charges plus reservations of jobs
    still running, as the quotas and the bot-wide budget count it), by server id."""
    now = ledger.now() if now is None else now
    start = ledger.policy.schedule.start(Period.MONTH, now)
    rows = await ledger.db.fetch_all(
        "SELECT guild_id AS key, images, credits_mc FROM usage_totals"
        " WHERE user_id = 0 AND period = 'month' AND period_start = ?",
        (start,),
    )
    return {row["key"]: from_row(Total, row) for row in rows}


def parse_date(text: str, label: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text.strip())
    except ValueError:
        raise InvalidRequest(f"The {label} date must look like 2025-01-31.") from None


def export_range(first: str | None, last: str | None, now: float) -> tuple[dt.date, dt.date]:
    """The inclusive UTC date range to export; defaults to this calendar month so far."""
    today = dt.datetime.fromtimestamp(now, UTC).date()
    end = parse_date(last, "end") if last else today
    start = parse_date(first, "start") if first else min(end, today).replace(day=1)
    if start > end:
        raise InvalidRequest("The start date is after the end date.")
    if start > today:
        raise InvalidRequest(f"The start date is after today ({today}): nothing to export yet.")
    # Nothing is recorded after today; and the day after 9999-12-31 does not exist.
    end = min(end, today)
    if (end - start).days + 1 > MAX_EXPORT_DAYS:
        raise InvalidRequest(f"Export at most {MAX_EXPORT_DAYS} days at a time.")
    return start, end


@dataclass(frozen=True)
class Export:
    data: bytes
    rows: int
    filename: str


async def export_csv(ledger: Ledger, guild_id: int, first: dt.date, last: dt.date) -> Export:
    """Every ledger row of the server reserved between `first` and `last` (inclusive, UTC
    calendar dates), oldest first, with exact decimal credits."""
    since = dt.datetime.combine(first, dt.time(), tzinfo=UTC).timestamp()
    until = dt.datetime.combine(last + dt.timedelta(days=1), dt.time(), tzinfo=UTC).timestamp()
    rows = await ledger.db.fetch_all(
        "SELECT l.*, j.state AS job_state FROM ledger l LEFT JOIN jobs j ON j.id = l.job_id"
        " WHERE l.guild_id = ? AND l.reserved_at >= ? AND l.reserved_at < ?"
        " ORDER BY l.reserved_at, l.job_id",
        (guild_id, since, until),
    )
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for row in rows:
        writer.writerow(
            (
                row["job_id"],
                _iso(row["reserved_at"]),
                row["user_id"],
                row["variant"],
                row["status"],
                row["settled_by"] or "",
                _iso(row["settled_at"]) if row["settled_at"] is not None else "",
                row["job_state"] or "",
                format_credits(row["reserved_mc"]),
                "" if row["charged_mc"] is None else format_credits(row["charged_mc"]),
                row["reserved_images"],
                "" if row["charged_images"] is None else row["charged_images"],
                _provider_of(row["variant"]),
            )
        )
    return Export(
        buffer.getvalue().encode("utf-8"), len(rows), f"ledger-{guild_id}-{first}-{last}.csv"
    )


def _provider_of(variant: str) -> str:
    """Who made it (`aiml` for BFL's `pro` made by its backup: the row names `pro-aiml`)."""
    known = CATALOGUE.get(variant)
    return known.provider if known else ""


def _iso(moment: float) -> str:
    return dt.datetime.fromtimestamp(moment, UTC).isoformat(timespec="seconds")
