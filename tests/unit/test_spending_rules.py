"""The spending settings and what the operator and members read about them."""

from __future__ import annotations

import pytest

from bot.errors import SettingsError
from bot.ledger import BudgetAlert, QuotaPolicy
from bot.ledger.spending import public_bot_warning
from bot.settings import load_settings

RESET = 1_798_761_600  # 00:00 UTC on Friday 1 January 2027


def test_allowed_servers_and_the_bot_budget_are_read_from_the_environment() -> None:
    settings = load_settings(
        discord_token="t", allowed_guild_ids=" 123, 456 ,", bot_monthly_credits="300.5"
    )
    policy = QuotaPolicy.from_settings(settings)
    assert policy.allowed_guilds == frozenset({123, 456})
    assert policy.bot_monthly_mc == 300_500
    assert policy.server_allowed(123) and not policy.server_allowed(789)
    assert policy.server_allowed(None), "direct messages are judged by their servers"

    unset = QuotaPolicy.from_settings(load_settings(discord_token="t"))
    assert (unset.allowed_guilds, unset.bot_monthly_mc) == (None, None)
    assert unset.server_allowed(789)
    unlimited = load_settings(discord_token="t", bot_monthly_credits="unlimited")
    assert unlimited.bot_monthly_credits is None


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("123,abc", "ALLOWED_GUILD_IDS Value error, 'abc' is not a server id"),
        ("123,-4", "ALLOWED_GUILD_IDS Value error, '-4' is not a server id"),
        (",", "ALLOWED_GUILD_IDS Value error, names no server id"),
    ],
)
def test_a_malformed_server_list_is_named(value: str, problem: str) -> None:
    with pytest.raises(SettingsError) as error:
        load_settings(discord_token="t", allowed_guild_ids=value)
    assert str(error.value).startswith(problem)


def test_a_negative_budget_is_refused() -> None:
    with pytest.raises(SettingsError, match="BOT_MONTHLY_CREDITS"):
        load_settings(discord_token="t", bot_monthly_credits="-5")


def test_the_operator_is_told_when_strangers_can_spend() -> None:
    open_to_all = QuotaPolicy()
    warning = public_bot_warning(True, open_to_all)
    assert warning is not None and "Turn 'Public Bot' off, or set ALLOWED_GUILD_IDS" in warning
    assert "no bot-wide cap (BOT_MONTHLY_CREDITS)" in warning
    capped = public_bot_warning(True, QuotaPolicy(bot_monthly_mc=30_000_000))
    assert capped is not None and "a bot-wide cap of 30000 credits a month" in capped
    assert public_bot_warning(False, open_to_all) is None  # only the owner can add it
    assert public_bot_warning(True, QuotaPolicy(allowed_guilds=frozenset({1}))) is None


def test_the_owners_warnings_say_what_was_used_and_when_it_resets() -> None:
    reset = "at 00:00 UTC on Friday 1 January (<t:1798761600:R>)"
    assert BudgetAlert(80, 24_500, 30_000, RESET).text == (
        "Fluxcord has used 80% of its monthly budget (BOT_MONTHLY_CREDITS): 24.5 of 30 "
        f"credits. It resets {reset}."
    )
    assert BudgetAlert(100, 30_000, 30_000, RESET).text == (
        "Fluxcord has used up its monthly budget (BOT_MONTHLY_CREDITS): 30 of 30 credits "
        f"used. Requests that would go over it are refused until it resets {reset}."
    )
    assert BudgetAlert(100, 29_000, 30_000, RESET).text.startswith(
        "Fluxcord has too little left of its monthly budget (BOT_MONTHLY_CREDITS): 29 of 30"
    )
