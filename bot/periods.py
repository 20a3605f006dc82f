"""Allowance windows: days, weeks (from Monday) and calendar months, in UTC, each starting at
a configured time of day.

Windows are fixed, not rolling: everyone's allowance resets at the same, stated moment,
which is what a member can plan around ("resets at 00:00 UTC").
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

UTC = dt.UTC


class Period(StrEnum):
    DAY = "day"
    WEEK = "week"
    MONTH = "month"

    @property
    def adjective(self) -> str:
        return {"day": "daily", "week": "weekly", "month": "monthly"}[self.value]

    @property
    def current(self) -> str:
        """How a sentence names the window we are in: "today", "this week", "this month"."""
        return {"day": "today", "week": "this week", "month": "this month"}[self.value]


PERIODS: tuple[Period, ...] = (Period.DAY, Period.WEEK, Period.MONTH)


def parse_reset_time(text: str) -> dt.time:
    """ "HH:MM" (24-hour, UTC) → a time; raises ValueError with a readable reason."""
    try:
        hours, minutes = (int(part) for part in text.strip().split(":"))
    except ValueError:
        raise ValueError("must look like HH:MM (24-hour, UTC), e.g. 00:00") from None
    if not (0 <= hours < 24 and 0 <= minutes < 60):
        raise ValueError("must be a time between 00:00 and 23:59")
    return dt.time(hours, minutes, tzinfo=UTC)


@dataclass(frozen=True)
class Windows:
    """The day, week and month windows containing one moment."""

    starts: Mapping[Period, int]
    ends: Mapping[Period, int]

    def contains(self, when: float) -> bool:
        return max(self.starts.values()) <= when < min(self.ends.values())


@dataclass(frozen=True)
class ResetSchedule:
    """When windows start. All arithmetic is in UTC, so there are no DST jumps."""

    at: dt.time = dt.time(0, 0, tzinfo=UTC)
    # The last windows computed: every reservation needs them, and they change once a day.
    _last: list[Windows] = field(default_factory=list, compare=False, repr=False)

    def windows(self, when: float) -> Windows:
        """The windows containing `when` (cached while `when` stays inside them)."""
        last = next(iter(self._last), None)  # one read: the db thread calls this too
        if last is not None and last.contains(when):
            return last
        found = Windows(
            {period: self.start(period, when) for period in PERIODS},
            {period: self.end(period, when) for period in PERIODS},
        )
        self._last[:] = [found]
        return found

    def _day_start(self, when: dt.datetime) -> dt.datetime:
        start = dt.datetime.combine(when.date(), self.at.replace(tzinfo=None), tzinfo=UTC)
        return start if start <= when else start - dt.timedelta(days=1)

    def start(self, period: Period, when: float) -> int:
        """Unix time at which the window of `period` containing `when` began."""
        return int(self.start_datetime(period, when).timestamp())

    def start_datetime(self, period: Period, when: float) -> dt.datetime:
        day = self._day_start(dt.datetime.fromtimestamp(when, UTC))
        if period is Period.DAY:
            return day
        if period is Period.WEEK:
            # The window's *date* decides the weekday: with a 06:00 reset, Monday 03:00
            # still belongs to the week that began the Monday before.
            return day - dt.timedelta(days=day.weekday())
        return day.replace(day=1)

    def end(self, period: Period, when: float) -> int:
        """Unix time at which the window of `period` containing `when` ends (next reset)."""
        start = self.start_datetime(period, when)
        if period is Period.DAY:
            following = start + dt.timedelta(days=1)
        elif period is Period.WEEK:
            following = start + dt.timedelta(days=7)
        elif start.month == 12:
            following = start.replace(year=start.year + 1, month=1)
        else:
            following = start.replace(month=start.month + 1)
        return int(following.timestamp())

    def starts(self, when: float) -> Mapping[Period, int]:
        return self.windows(when).starts

    def describe(self) -> str:
        return f"{self.at.hour:02d}:{self.at.minute:02d} UTC"


def format_reset(moment: int) -> str:
    """ "at 00:00 UTC on Tuesday 4 June (<t:…:R>)": exact for everyone, plus Discord's
    relative time rendered in the reader's own locale."""
    when = dt.datetime.fromtimestamp(moment, UTC)
    return f"at {when:%H:%M} UTC on {when:%A} {when.day} {when:%B} (<t:{moment}:R>)"
