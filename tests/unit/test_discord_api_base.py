"""DISCORD_API_BASE: a REST proxy's address, held to the same rule as the provider bases
(the bot token goes there), and applied to discord.py by the entry point only."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from discord.http import Route

from bot.cli.common import point_discord_at
from bot.errors import SettingsError
from bot.settings import DISCORD_API_BASE, load_settings

TOKEN = "token-for-the-base-test"


@pytest.fixture
def route_base() -> Iterator[None]:
    saved = Route.BASE
    yield
    Route.BASE = saved


def test_discords_own_address_changes_nothing(route_base: None) -> None:
    before = Route.BASE
    settings = load_settings(discord_token=TOKEN)
    assert settings.discord_api_base == DISCORD_API_BASE
    point_discord_at(settings)
    assert before == Route.BASE


def test_a_proxy_receives_every_rest_call(route_base: None) -> None:
    settings = load_settings(discord_token=TOKEN, discord_api_base="https://proxy.example.org/")
    point_discord_at(settings)
    assert Route.BASE == "https://proxy.example.org/api/v10"


@pytest.mark.parametrize(
    "base", ["http://proxy.example.org", "https://proxy.example.org:8443", "ftp://x", "proxy"]
)
def test_an_address_the_token_could_not_travel_to_safely_is_refused(base: str) -> None:
    with pytest.raises(SettingsError) as refused:
        load_settings(discord_token=TOKEN, discord_api_base=base)
    assert "DISCORD_API_BASE" in str(refused.value)
    assert TOKEN not in str(refused.value)
