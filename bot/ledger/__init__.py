"""Quotas and usage accounting: what a caller of the ledger needs.

- `bot.ledger.quotas`: judging a request against the allowances (QuotaState, Breach and the
  refusals QuotaExceeded and TooManyRefunds).
- `bot.ledger.accounts`: the money path, `Ledger`: reserve at admission, charge or refund at
  the job's end, what members used.
- `bot.ledger.admin`: moderators' overrides, grants and resets (`Ledger.admin`), each
  recorded in the quota history and the server's audit log.
- `bot.ledger.spending`: who may spend the operator's money at all: the servers allowed
  (ALLOWED_GUILD_IDS) and the whole bot's monthly budget (`Ledger.budget`), with the owner's
  warnings.
- `bot.ledger.policy`: units, defaults and amounts; `bot.ledger.reports`: moderators' totals
  and the CSV export.
"""

from bot.ledger.accounts import Ledger, MemberUsage, WindowUsage
from bot.ledger.admin import Change, Override, QuotaAdmin, describe_limit, describe_target
from bot.ledger.policy import (
    MILLI,
    Limits,
    Metric,
    QuotaPolicy,
    Scope,
    credits_to_mc,
    format_amount,
    format_credits,
    parse_amount,
    unlimited_limits,
)
from bot.ledger.quotas import Breach, QuotaExceeded, QuotaState, TooManyRefunds, guild_key
from bot.ledger.spending import BotBudget, BotBudgetSpent, BudgetAlert, ServerNotAllowed
from bot.periods import Period, ResetSchedule, format_reset, parse_reset_time

__all__ = [
    "MILLI",
    "BotBudget",
    "BotBudgetSpent",
    "Breach",
    "BudgetAlert",
    "Change",
    "Ledger",
    "Limits",
    "MemberUsage",
    "Metric",
    "Override",
    "Period",
    "QuotaAdmin",
    "QuotaExceeded",
    "QuotaPolicy",
    "QuotaState",
    "ResetSchedule",
    "Scope",
    "ServerNotAllowed",
    "TooManyRefunds",
    "WindowUsage",
    "credits_to_mc",
    "describe_limit",
    "describe_target",
    "format_amount",
    "format_credits",
    "format_reset",
    "guild_key",
    "parse_amount",
    "parse_reset_time",
    "unlimited_limits",
]
