"""Provider key checks against the BFL and AI/ML API stand-ins: what the operator reads in
the log, the metrics and the readiness report (bot/providers/accounts.py)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest

from bot.operations.metrics import Metrics
from bot.providers.accounts import AccountMonitor, account_keys
from bot.services import build_providers
from bot.settings import Settings
from tests.conftest import BFL_KEY
from tests.fakes.aiml_server import UNITS_PER_USD, FakeAIML
from tests.fakes.bfl_server import FakeBFL

AIML_KEY = "test-aiml-key-0123456789"


@pytest.fixture
async def aiml() -> AsyncIterator[FakeAIML]:
    async with FakeAIML(api_key=AIML_KEY) as fake:
        yield fake


class Checks:
    """A monitor built as the bot builds it, from settings."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.providers, keys = build_providers(settings)
        self.metrics = Metrics(process_metrics=False)
        self.monitor = AccountMonitor(
            account_keys(settings, keys),
            metrics=self.metrics,
            low_balance=settings.low_balance_credits,
            interval=settings.provider_check_interval_seconds,
        )

    def sample(self, name: str, provider: str, key: str) -> float | None:
        return self.metrics.registry.get_sample_value(name, {"provider": provider, "key": key})

    async def close(self) -> None:
        for provider in self.providers.values():
            await provider.aclose()


@pytest.fixture
async def checks() -> AsyncIterator[Any]:
    made: list[Checks] = []

    def make(**values: Any) -> Checks:
        settings = Settings(
            discord_token="t",
            allow_loopback_provider_urls=True,
            **values,  # type: ignore[arg-type]
        )
        made.append(Checks(settings))
        return made[-1]

    yield make
    for item in made:
        await item.close()


def lines(caplog: pytest.LogCaptureFixture, level: int) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "bot.providers.accounts" and r.levelno == level
    ]


async def test_a_rejected_bfl_key_is_one_error_line_naming_the_setting(
    fake_bfl: FakeBFL, checks: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    wrong = "not-the-bfl-key-42"
    made = checks(bfl_api_key=wrong, bfl_api_base=fake_bfl.base_url)
    await made.monitor.check_all()
    await made.monitor.check_all()  # the next round says nothing new

    assert lines(caplog, logging.ERROR) == [
        "BFL_API_KEY was rejected by Black Forest Labs (401): check the key in the BFL dashboard"
    ]
    assert made.sample("fluxcord_provider_key_valid", "bfl", "1") == 0
    assert made.monitor.report() == {
        "bfl": {
            "usable": False,
            "keys": [{"key": "1", "setting": "BFL_API_KEY", "state": "invalid", "credits": None}],
        }
    }
    assert wrong not in caplog.text
    assert wrong not in made.metrics.render().decode()


async def test_one_bad_key_among_several_is_named_by_position_and_the_others_carry_on(
    checks: Any, caplog: pytest.LogCaptureFixture
) -> None:
    async with FakeBFL(api_keys={BFL_KEY: 4, "second-key-8": 4, "revoked-key-7": 4}) as fake:
        fake.remove_key("revoked-key-7")
        made = checks(
            bfl_api_key=BFL_KEY,
            bfl_api_keys="second-key-8:4,revoked-key-7:4",
            bfl_api_base=fake.base_url,
        )
        await made.monitor.check_all()
    assert lines(caplog, logging.ERROR) == [
        "BFL_API_KEYS key 2 was rejected by Black Forest Labs (401): check the key in the "
        "BFL dashboard"
    ]
    report = made.monitor.report()["bfl"]
    assert report["usable"] is True
    assert [k["state"] for k in report["keys"]] == ["ok", "ok", "invalid"]
    assert [k["setting"] for k in report["keys"]] == [
        "BFL_API_KEY",
        "BFL_API_KEYS key 1",
        "BFL_API_KEYS key 2",
    ]
    assert made.sample("fluxcord_provider_key_valid", "bfl", "3") == 0
    assert made.sample("fluxcord_provider_balance_credits", "bfl", "1") == fake.credits


async def test_a_low_bfl_balance_is_a_warning_once_and_its_recovery_is_said(
    fake_bfl: FakeBFL, checks: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    fake_bfl.credits = 120
    made = checks(bfl_api_key=BFL_KEY, bfl_api_base=fake_bfl.base_url)
    await made.monitor.check_all()
    await made.monitor.check_all()
    assert lines(caplog, logging.WARNING) == [
        "BFL_API_KEY: the Black Forest Labs account is low on credits (120 credits left, "
        "below LOW_BALANCE_CREDITS=500)"
    ]
    assert made.monitor.report()["bfl"]["usable"] is True  # low is a warning, not a failure
    assert made.sample("fluxcord_provider_balance_credits", "bfl", "1") == 120

    fake_bfl.credits = 0
    await made.monitor.check_all()
    assert lines(caplog, logging.ERROR) == [
        "BFL_API_KEY: the Black Forest Labs account has no credits left: top it up in the "
        "BFL dashboard"
    ]
    assert made.monitor.report()["bfl"]["usable"] is False

    fake_bfl.credits = 5000
    await made.monitor.check_all()
    assert lines(caplog, logging.INFO)[-1] == (
        "BFL_API_KEY: Black Forest Labs accepts the key (5,000 credits left)"
    )
    assert made.monitor.report()["bfl"]["usable"] is True


async def test_the_aiml_balance_in_fluxcord_credits_and_its_own_low_flag(
    aiml: FakeAIML, checks: Any, caplog: pytest.LogCaptureFixture
) -> None:
    aiml.credits = 10 * UNITS_PER_USD  # $10: 1,000 of our credits
    made = checks(aiml_api_key=AIML_KEY, aiml_api_base=aiml.base_url, low_balance_credits=100)
    await made.monitor.check_all()
    assert made.sample("fluxcord_provider_balance_credits", "aiml", "1") == 1000
    assert made.sample("fluxcord_provider_key_valid", "aiml", "1") == 1
    assert made.monitor.report()["aiml"]["keys"][0]["state"] == "ok"
    assert aiml.balance_checks == 1

    aiml.credits = 4 * UNITS_PER_USD  # $4: under the stand-in's $5 threshold, over ours
    await made.monitor.check_all()
    assert lines(caplog, logging.WARNING) == [
        "AIML_API_KEY: the AI/ML API account is low on credits (400 credits left, "
        "the AI/ML API flags the balance as low)"
    ]


async def test_aiml_bad_key_and_out_of_credits(
    aiml: FakeAIML, checks: Any, caplog: pytest.LogCaptureFixture
) -> None:
    bad = checks(aiml_api_key="wrong-aiml-key-1", aiml_api_base=aiml.base_url)
    await bad.monitor.check_all()
    aiml.balance_faults.append(403)  # the AI/ML API's documented "out of credits"
    good = checks(aiml_api_key=AIML_KEY, aiml_api_base=aiml.base_url)
    await good.monitor.check_all()
    assert lines(caplog, logging.ERROR) == [
        "AIML_API_KEY was rejected by the AI/ML API (401): check the key in the AI/ML API "
        "dashboard",
        "AIML_API_KEY: the AI/ML API account has no credits left: top it up in the AI/ML "
        "API dashboard",
    ]
    assert good.sample("fluxcord_provider_key_valid", "aiml", "1") == 1
    assert good.sample("fluxcord_provider_balance_credits", "aiml", "1") == 0
    assert "wrong-aiml-key-1" not in caplog.text


async def test_an_unanswered_check_keeps_what_is_known(
    aiml: FakeAIML, checks: Any, caplog: pytest.LogCaptureFixture
) -> None:
    made = checks(aiml_api_key=AIML_KEY, aiml_api_base=aiml.base_url)
    await made.monitor.check_all()
    aiml.balance_faults.append(500)
    await made.monitor.check_all()
    assert made.monitor.report()["aiml"]["usable"] is True
    assert made.monitor.report()["aiml"]["keys"][0]["state"] == "unreachable"
    [warning] = lines(caplog, logging.WARNING)
    assert warning.startswith("AIML_API_KEY: could not check the key at the AI/ML API (HTTP 500")
    await made.monitor.check_all()
    assert made.monitor.report()["aiml"]["keys"][0]["state"] == "ok"
