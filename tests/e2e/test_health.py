"""What an operator sees of the bot's health: the provider key checks in the log and the
metrics, `/livez`, `/readyz` (and `/healthz`), and the invite URL at start. The real bot
against the Discord, BFL and AI/ML API stand-ins."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path

import httpx
import pytest

from bot.settings import Settings
from bot.version import __version__
from cogs.client import FluxcordBot
from cogs.permissions import BOT_PERMISSIONS
from tests.conftest import BFL_KEY
from tests.e2e.conftest import World
from tests.fakes.aiml_server import UNITS_PER_USD
from tests.fakes.bfl_server import FakeBFL
from tests.fakes.discord_server import FakeDiscord


async def started(world: World, **overrides: object) -> httpx.AsyncClient:
    """The bot, once its first key checks are done; a client for its web server."""
    bot = await world.start_bot(**overrides)
    await bot.services.accounts.wait_checked()
    return httpx.AsyncClient(base_url=f"http://127.0.0.1:{bot.services.web.port}")


def errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


async def test_a_wrong_bfl_key_is_one_line_a_red_readiness_and_a_metric(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    wrong = "wrong-bfl-key-31415"
    http = await started(world, bfl_api_key=wrong)
    async with http:
        ready = await http.get("/readyz")
        assert ready.status_code == 503
        body = ready.json()
        assert body["status"] == "unhealthy"
        assert body["version"] == __version__
        assert body["checks"] == {"database": "ok", "discord": "ok", "providers": "unusable"}
        assert body["providers"] == {
            "bfl": {
                "usable": False,
                "keys": [
                    {"key": "1", "setting": "BFL_API_KEY", "state": "invalid", "credits": None}
                ],
            }
        }
        assert (await http.get("/healthz")).json() == body  # the older name, same answer
        # The process itself is fine: a container must not restart it for a bad key.
        live = await http.get("/livez")
        assert live.status_code == 200
        assert live.json()["service"] == "fluxcord"
        metrics = (await http.get("/metrics")).text
        assert 'fluxcord_provider_key_valid{key="1",provider="bfl"} 0.0' in metrics
    assert errors(caplog) == [
        "BFL_API_KEY was rejected by Black Forest Labs (401): check the key in the BFL dashboard"
    ]
    assert wrong not in caplog.text and wrong not in metrics and wrong not in ready.text


async def test_a_member_meeting_the_bad_key_is_told_it_is_the_bots_key(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    await (await started(world, bfl_api_key="wrong-bfl-key-27182")).aclose()
    it = await world.discord.invoke_slash(
        world.alice.id, world.channel.id, "imagine", {"prompt": "a lighthouse"}
    )
    shown = await it.wait_original(lambda m: "key" in m.content)
    assert shown.content.endswith(
        "The bot's key for the image service is not working, so nothing was made or charged. "
        "The bot's operator has been told."
    )
    assert "not allowed to use this model" not in shown.content
    assert len(errors(caplog)) == 1  # the failure in use repeats nothing the check said


async def test_a_key_revoked_while_running_is_said_at_the_first_failure(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    async with await started(world) as http:
        assert (await http.get("/readyz")).status_code == 200
        world.bfl.remove_key(BFL_KEY)  # revoked in the BFL dashboard; the next check is far off
        it = await world.discord.invoke_slash(
            world.alice.id, world.channel.id, "imagine", {"prompt": "a harbour"}
        )
        await it.wait_original(lambda m: "not working" in m.content)
        # Told at once, by the request that met it: no need to wait for the next check.
        assert errors(caplog) == [
            "BFL_API_KEY was rejected by Black Forest Labs (401): check the key in the BFL "
            "dashboard"
        ]
        ready = await http.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["providers"]["bfl"]["keys"][0]["state"] == "invalid"


async def test_ready_with_working_keys_reports_each_providers_balance(
    world_with_aiml: World, caplog: pytest.LogCaptureFixture
) -> None:
    world = world_with_aiml
    assert world.aiml is not None
    world.aiml.credits = 3 * UNITS_PER_USD  # $3: 300 credits, under LOW_BALANCE_CREDITS
    http = await started(world)
    async with http:
        ready = await http.get("/readyz")
        live = await http.get("/livez")
    assert ready.status_code == 200
    body = ready.json()
    assert body["checks"] == {"database": "ok", "discord": "ok", "providers": "ok"}
    assert body["providers"]["bfl"]["keys"][0]["credits"] == world.bfl.credits
    assert body["providers"]["aiml"] == {
        "usable": True,
        "keys": [{"key": "1", "setting": "AIML_API_KEY", "state": "low", "credits": 300.0}],
    }
    assert live.status_code == 200
    assert live.json()["version"] == __version__
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert (
        "AIML_API_KEY: the AI/ML API account is low on credits (300 credits left, below "
        "LOW_BALANCE_CREDITS=500)"
    ) in warnings
    assert errors(caplog) == []


async def test_the_invite_url_is_logged_with_exactly_the_needed_permissions(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    await world.start_bot()
    url = (
        f"https://discord.com/oauth2/authorize?client_id={world.discord.application_id}"
        f"&scope=bot+applications.commands&permissions={BOT_PERMISSIONS.value}"
    )
    said = [r.getMessage() for r in caplog.records if r.name == "cogs.client"]
    assert f"invite Fluxcord to another server with {url}" in said


async def test_a_bot_in_no_server_says_so_with_the_invite_url(
    database_target: str | Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with FakeBFL(api_key=BFL_KEY) as bfl, FakeDiscord() as discord_fake:
        values: dict[str, object] = {
            "discord_token": discord_fake.token,
            "bfl_api_key": BFL_KEY,
            "bfl_api_base": bfl.base_url,
            "web_port": 0,
            "allow_loopback_provider_urls": True,
        }
        if isinstance(database_target, Path):
            values["database_path"] = database_target
        else:
            values["database_url"] = database_target
        with discord_fake.patch_discord_py():
            bot = FluxcordBot(Settings(**values), guild_ready_timeout=0.05)  # type: ignore[arg-type]
            ready = asyncio.Event()

            async def on_ready() -> None:
                ready.set()

            bot.add_listener(on_ready, "on_ready")
            task = asyncio.create_task(bot.start(discord_fake.token))
            try:
                await asyncio.wait_for(ready.wait(), 10)
            finally:
                await bot.close()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        application_id = discord_fake.application_id
    [line] = [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.WARNING and "no server" in r.getMessage()
    ]
    assert line == (
        "Fluxcord is in no server yet: invite it with https://discord.com/oauth2/authorize?"
        f"client_id={application_id}&scope=bot+applications.commands"
        f"&permissions={BOT_PERMISSIONS.value}"
    )
