"""docs/configuration.md is the settings model rendered (bot/operations/config_reference.py):
a setting added, removed or re-described without regenerating it fails here."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.operations import config_reference
from bot.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "configuration.md"


def test_the_configuration_reference_is_the_settings_model_rendered() -> None:
    assert DOC.read_text(encoding="utf-8") == config_reference.render(), (
        f"docs/configuration.md is out of date: run {config_reference.REGENERATE}"
    )


def test_every_setting_is_listed_once_with_a_description() -> None:
    text = config_reference.render()
    for name, field in Settings.model_fields.items():
        assert field.description, f"{name.upper()} needs a description= in bot/settings.py"
        assert text.count(f"| `{name.upper()}` |") == 1, name


def test_secrets_are_marked_and_defaults_shown() -> None:
    rows = {
        line.split(" | ")[0].strip("| `"): line
        for line in config_reference.render().splitlines()
        if line.startswith("| `")
    }
    assert "**secret**" in rows["DISCORD_TOKEN"] and "**required**" in rows["DISCORD_TOKEN"]
    assert "**secret**" in rows["DATABASE_URL"]
    assert "**secret**" not in rows["DATABASE_PATH"]
    assert "`data/fluxcord.sqlite3`" in rows["DATABASE_PATH"]
    assert "`unlimited`" in rows["DEFAULT_USER_WEEKLY_IMAGES"]
    assert "1–1000" in rows["PROVIDER_MAX_ACTIVE"]


def test_a_new_setting_joins_the_section_of_the_one_before_it() -> None:
    grouped = dict(
        (section.first_field, names) for section, names in config_reference.sections_of_fields()
    )
    assert grouped["web_host"][:5] == [
        "web_host",
        "web_port",
        "metrics_token",
        "webhook_public_url",
        "webhook_grace_seconds",
    ]
    assert sum(len(names) for names in grouped.values()) == len(Settings.model_fields)


def test_a_section_naming_no_setting_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    renamed = (config_reference.Section("no_such_setting", "Gone", ""),)
    monkeypatch.setattr(config_reference, "SECTIONS", config_reference.SECTIONS + renamed)
    with pytest.raises(LookupError, match="no_such_setting"):
        config_reference.render()
