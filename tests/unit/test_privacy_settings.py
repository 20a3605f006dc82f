"""The retention settings: their defaults, "0 = for ever", and a clear line for a bad value."""

from __future__ import annotations

import pytest

from bot.errors import SettingsError
from bot.privacy import RetentionPolicy
from bot.privacy.retention import DAY
from bot.settings import load_settings


def test_the_defaults_and_zero_for_ever() -> None:
    assert RetentionPolicy.from_settings(load_settings(discord_token="x")) == RetentionPolicy(
        prompts=90 * DAY,
        images=30 * DAY,
        finished_jobs=365 * DAY,
        audit=365 * DAY,
        departed_grace=30 * DAY,
    )
    kept = load_settings(
        discord_token="x",
        prompt_retention_days="0",
        reference_retention_days="0",
        finished_job_retention_days="0",
        audit_retention_days="0",
        departed_server_grace_days="0",
    )
    assert RetentionPolicy.from_settings(kept) == RetentionPolicy()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            {"finished_job_retention_days": "0.5"},
            "FINISHED_JOB_RETENTION_DAYS must be 0 (for ever) or at least 1",
        ),
        (
            {"prompt_retention_days": "-1"},
            "PROMPT_RETENTION_DAYS Input should be greater than or equal to 0",
        ),
        (
            {"audit_retention_days": "a year"},
            "AUDIT_RETENTION_DAYS Input should be a valid number, unable to parse string as a"
            " number",
        ),
    ],
)
def test_a_bad_value_names_the_setting(overrides: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError) as error:
        load_settings(discord_token="x", **overrides)
    assert str(error.value) == message
