"""What is limited, in which units, and the defaults that apply until a moderator says
otherwise."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING

from bot.errors import InvalidRequest
from bot.periods import PERIODS, Period, ResetSchedule, parse_reset_time
from bot.text import plural

if TYPE_CHECKING:
    from bot.settings import Settings

# Credits are BFL's unit (1 credit = $0.01). Prices have up to two decimals and the API may
# return more, so the ledger counts integer thousandths of a credit: sums stay exact.
MILLI = 1000
# Largest amount a moderator may set or a provider may charge: far beyond any real budget,
# far below SQLite's limit.
MAX_AMOUNT = 10**12


class Metric(StrEnum):
    IMAGES = "images"
    CREDITS = "credits"

    @property
    def singular(self) -> str:
        return {"images": "image", "credits": "credit"}[self.value]


METRICS: tuple[Metric, ...] = (Metric.IMAGES, Metric.CREDITS)


class Scope(StrEnum):
    USER = "user"  # one member's own allowance
    ROLE = "role"  # a per-member allowance that comes with a role
    GUILD = "guild"  # the whole server's budget


LimitKey = tuple[Period, Metric]
# Images, or millicredits; None = unlimited.
Limits = Mapping[LimitKey, int | None]


def credits_to_mc(credits: float) -> int:
    return round(credits * MILLI)


def format_credits(mc: int) -> str:
    """Exact decimal text: 3000 → "3", 2500 → "2.5", 1 → "0.001"."""
    sign = "-" if mc < 0 else ""
    whole, fraction = divmod(abs(mc), MILLI)
    text = f"{whole}.{fraction:03d}".rstrip("0").rstrip(".")
    return sign + text


def format_amount(metric: Metric, amount: int) -> str:
    """ "1 image", "12 images", "1 credit", "2.5 credits"."""
    if metric is Metric.IMAGES:
        return plural(amount, "image")
    number = format_credits(amount)
    return f"{number} {'credit' if number == '1' else 'credits'}"


def unlimited_limits() -> dict[LimitKey, int | None]:
    return {(period, metric): None for period in PERIODS for metric in METRICS}


@dataclass(frozen=True)
class QuotaPolicy:
    """The reset schedule and the bot-wide defaults for members and servers."""

    schedule: ResetSchedule = field(default_factory=ResetSchedule)
    user: Limits = field(default_factory=unlimited_limits)
    guild: Limits = field(default_factory=unlimited_limits)
    # Jobs a member may have refunded per server and day after the provider had them (and
    # billed them): past it their next request waits for the reset. None: no cap.
    max_refunded_per_day: int | None = None
    # Who may spend the operator's money at all (bot/ledger/spending.py): the servers allowed
    # to make images (None: any server), and the budget of the whole bot per month window,
    # over every server and direct messages together (millicredits; None: no cap).
    allowed_guilds: frozenset[int] | None = None
    bot_monthly_mc: int | None = None

    def server_allowed(self, guild_id: int | None) -> bool:
        """Whether a server may make images; direct messages (None) are admitted through the
        servers that allow them, each of which must be allowed itself."""
        return guild_id is None or self.allowed_guilds is None or guild_id in self.allowed_guilds

    @classmethod
    def unlimited(cls, schedule: ResetSchedule | None = None) -> QuotaPolicy:
        return cls(schedule or ResetSchedule())

    @classmethod
    def from_settings(cls, settings: Settings) -> QuotaPolicy:
        def limits(level: str) -> dict[LimitKey, int | None]:
            values: dict[LimitKey, int | None] = {}
            for period in PERIODS:
                for metric in METRICS:
                    name = f"default_{level}_{period.adjective}_{metric.value}"
                    value: float | None = getattr(settings, name)
                    if value is None:
                        values[(period, metric)] = None
                    elif metric is Metric.CREDITS:
                        values[(period, metric)] = credits_to_mc(value)
                    else:
                        values[(period, metric)] = int(value)
            return values

        return cls(
            schedule=ResetSchedule(parse_reset_time(settings.quota_reset_time)),
            user=limits("user"),
            guild=limits("guild"),
            max_refunded_per_day=settings.max_refunded_jobs_per_day or None,
            allowed_guilds=settings.allowed_guilds,
            bot_monthly_mc=(
                None
                if settings.bot_monthly_credits is None
                else credits_to_mc(settings.bot_monthly_credits)
            ),
        )


def parse_amount(metric: Metric, value: float) -> int | None:
    """A moderator's amount → images or millicredits; -1 means unlimited."""
    if value == -1:
        return None
    if value < 0:
        raise InvalidRequest("The amount must be 0 or more, or -1 for unlimited.")
    if metric is Metric.IMAGES:
        if value != int(value):
            raise InvalidRequest("A number of images must be a whole number.")
        return int(value)
    return credits_to_mc(value)
