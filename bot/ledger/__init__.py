"""Quotas and usage accounting: reserve at admission, settle at the job's end (see
`bot.ledger.ledger` for the rules)."""

from bot.ledger.ledger import (
    Breach,
    Change,
    Ledger,
    MemberUsage,
    Override,
    QuotaExceeded,
    QuotaState,
    WindowUsage,
    describe_limit,
    describe_target,
    guild_key,
)
from bot.ledger.policy import (
    MILLI,
    Limits,
    Metric,
    QuotaPolicy,
    Scope,
    credits_to_mc,
    format_amount,
    format_credits,
    format_dollars,
    parse_amount,
    unlimited_limits,
)
from bot.ledger.windows import Period, ResetSchedule, format_reset, parse_reset_time

__all__ = [
    "MILLI",
    "Breach",
    "Change",
    "Ledger",
    "Limits",
    "MemberUsage",
    "Metric",
    "Override",
    "Period",
    "QuotaExceeded",
    "QuotaPolicy",
    "QuotaState",
    "ResetSchedule",
    "Scope",
    "WindowUsage",
    "credits_to_mc",
    "describe_limit",
    "describe_target",
    "format_amount",
    "format_credits",
    "format_dollars",
    "format_reset",
    "guild_key",
    "parse_amount",
    "parse_reset_time",
    "unlimited_limits",
]
