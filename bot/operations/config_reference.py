"""docs/configuration.md, rendered from the settings model so that it cannot drift from it.

Regenerate after changing a setting:
`python -m bot.operations.config_reference > docs/configuration.md`
(tests/unit/test_configuration_docs.py fails until the file matches).

Every field of `Settings` appears, in the model's order, under the heading of the nearest
section that starts at or before it (`SECTIONS`): a new setting placed next to a related one
joins that one's section without touching this file.
"""

from __future__ import annotations

import sys
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union, get_args, get_origin

from annotated_types import Ge, Gt, Le, Lt
from pydantic import SecretStr
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from bot.settings import ALLOWANCE_SETTINGS, UNLIMITED_WORDS, Settings

REGENERATE = "python -m bot.operations.config_reference > docs/configuration.md"

# Settings whose unset value means "no limit" rather than "not configured".
_UNLIMITED_WHEN_UNSET = frozenset({*ALLOWANCE_SETTINGS, "bot_monthly_credits"})


@dataclass(frozen=True)
class Section:
    first_field: str  # the section runs from this field to the next section's first field
    title: str
    intro: str


SECTIONS: tuple[Section, ...] = (
    Section(
        "discord_token",
        "Discord and the image services",
        "The bot needs `DISCORD_TOKEN` and at least one image service: `BFL_API_KEY` (or "
        "`BFL_API_KEYS`), `AIML_API_KEY`, or both. `fluxcord doctor` checks the token and each "
        "key.",
    ),
    Section(
        "database_path",
        "Database",
        "SQLite, the default, needs nothing and suits one bot on one machine. PostgreSQL lets "
        "several processes share the work: see [Scaling](scaling.md). Backups: "
        "[backups.md](backups.md).",
    ),
    Section(
        "provider_max_active",
        "Capacity, several processes and shutdown",
        "What runs at once, and how processes sharing one PostgreSQL database divide the "
        "work: see [Scaling](scaling.md).",
    ),
    Section(
        "poll_initial_interval",
        "Following a request",
        "Without webhooks the bot asks the image service for each request's status; it learns "
        "how long each kind of task takes and checks just after it is likely done.",
    ),
    Section(
        "reference_retention_days",
        "What is kept, and for how long",
        "What the bot stores and for how long: [Privacy](privacy.md).",
    ),
    Section(
        "max_reference_bytes",
        "Reference images",
        "Images a member edits must be PNG, JPEG or WebP, still and complete. Everything that "
        "can be decided without downloading is decided first; downloads and decodes share the "
        "budgets below, so many members at once cannot exhaust the machine's memory. The "
        "references of finished requests are kept for Reroll and Remix; after "
        "`REFERENCE_RETENTION_DAYS` they are deleted and those buttons say so.",
    ),
    Section(
        "max_jobs_in_flight_per_member",
        "One member's pace",
        "",
    ),
    Section(
        "aiml_api_key",
        "The AI/ML API, and trusting a provider",
        "The AI/ML API serves FLUX.2 [dev] (with LoRAs) and can serve `pro` too.",
    ),
    Section(
        "web_host",
        "Web server, webhooks and health",
        "One small web server answers BFL's webhooks and the operator's endpoints (health, "
        "readiness, `/metrics`). The Docker image sets `WEB_HOST=0.0.0.0`, the container's own "
        "address, so that a proxy can reach it. Keep the operator's endpoints private: see "
        "[Operations](operations.md#keep-the-operators-endpoints-private); webhooks: "
        "[Operations](operations.md#webhooks).",
    ),
    Section(
        "message_content_intent",
        "Discord behaviour and logging",
        "",
    ),
    Section(
        "quota_reset_time",
        "Allowances (quotas)",
        "Three levels of allowance all apply, each per day, per week (from Monday) and per "
        "calendar month, in images and in credits (1 credit = $0.01): the member's own "
        "allowance (the `DEFAULT_USER_*` settings), their roles' (set with `/quota set`), and "
        "the server's total budget (the `DEFAULT_GUILD_*` settings). Moderators override the "
        "defaults per server with `/quota`. Every allowance takes a number, `0` (nothing), or "
        "{unlimited} for no limit. The defaults cap a member at about $1 a day and $10 a "
        "month, and a server at $100 a month.",
    ),
    Section(
        "allowed_guild_ids",
        "Who may spend your money",
        "With **Public Bot** on, anyone who finds the invite link can add the bot, and every "
        "server gets the default budget, paid from your account. Turn Public Bot off, list "
        "the servers, or cap the whole bot. The owner is warned when the bot has used 80 % and "
        "100 % of `BOT_MONTHLY_CREDITS` (once a month each, also logged as a WARNING), in "
        "`OWNER_ALERT_CHANNEL_ID` or else by a direct message to the application's owner (a "
        "team's owner). The bot logs a warning at start while Public Bot is on and no server "
        "list is set.",
    ),
    Section(
        "max_pending_approvals_per_member",
        "Abuse limits",
        "Moderators set banned terms, strike thresholds and approval queues per server with "
        "`/settings` (see [Commands](commands.md)); these settings bound them bot-wide.",
    ),
)

PREAMBLE = f"""\
# Configuration

<!-- Generated from bot/settings.py by `{REGENERATE}`: do not edit by hand. -->

Fluxcord reads its settings from environment variables, or from the same names in a `.env`
file in the folder it starts from (`cp .env.example .env`). Names are case-insensitive, and an
empty value (`KEY=`) means "use the default".

- A setting that is missing or wrong stops the bot at once with one line naming it, e.g.
  `Configuration error: DISCORD_TOKEN is required`. `fluxcord doctor` checks the rest.
- Settings marked **secret** are never printed: not in logs (at any level), messages or errors.
  Keep them in your secrets store; a backup of the database does not hold them.
- Allowance settings take a number, `0` (nothing), or any of {{unlimited}} for no limit.
- Sizes are in bytes, times in seconds unless the name says otherwise, and money in credits
  (1 credit = $0.01).
"""


def _words(words: frozenset[str]) -> str:
    return ", ".join(f"`{word}`" for word in sorted(words, key=lambda w: (w.startswith("-"), w)))


def _is_secret(annotation: Any) -> bool:
    return annotation is SecretStr or SecretStr in get_args(annotation)


def _base_type(annotation: Any) -> Any:
    if get_origin(annotation) in (Union, types.UnionType):
        inner = [arg for arg in get_args(annotation) if arg is not type(None)]
        return inner[0] if len(inner) == 1 else annotation
    return annotation


_TYPE_NAMES: dict[Any, str] = {
    bool: "`true` / `false`",
    int: "whole number",
    float: "number",
    str: "text",
    Path: "file path",
    SecretStr: "text",
}


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def _bounds(field: FieldInfo) -> str:
    low = high = ""
    for rule in field.metadata:
        if isinstance(rule, Ge):
            low = f"{_number(rule.ge)}"  # type: ignore[arg-type]
        elif isinstance(rule, Gt):
            low = f"more than {_number(rule.gt)}"  # type: ignore[arg-type]
        elif isinstance(rule, Le):
            high = f"{_number(rule.le)}"  # type: ignore[arg-type]
        elif isinstance(rule, Lt):
            high = f"less than {_number(rule.lt)}"  # type: ignore[arg-type]
    if low and high:
        return f"{low}–{high}" if not low.startswith("more") else f"{low}, at most {high}"
    if low:
        return low if low.startswith("more") else f"at least {low}"
    return f"at most {high}" if high else ""


def type_text(name: str, field: FieldInfo) -> str:
    base = _base_type(field.annotation)
    text = _TYPE_NAMES.get(base, getattr(base, "__name__", str(base)))
    bounds = _bounds(field)
    if bounds:
        text = f"{text}, {bounds}"
    if name in _UNLIMITED_WHEN_UNSET:
        text += ", or `unlimited`"
    if _is_secret(field.annotation):
        text += ", **secret**"
    return text


def default_text(name: str, field: FieldInfo) -> str:
    default = field.default
    if default is PydanticUndefined:
        return "**required**"
    if default is None:
        return "`unlimited`" if name in _UNLIMITED_WHEN_UNSET else "unset"
    if isinstance(default, bool):
        return f"`{str(default).lower()}`"
    if isinstance(default, float):
        return f"`{_number(default)}`"
    return f"`{default}`"


def env_name(name: str, field: FieldInfo) -> str:
    alias = field.validation_alias or field.alias
    return (alias if isinstance(alias, str) else name).upper()


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _sentence(text: str) -> str:
    text = text.strip()
    return text if text.endswith(".") else f"{text}."


def sections_of_fields() -> list[tuple[Section, list[str]]]:
    """Each section with its fields, in the model's order."""
    fields = list(Settings.model_fields)
    starts = {section.first_field: section for section in SECTIONS}
    unknown = [section.first_field for section in SECTIONS if section.first_field not in fields]
    if unknown:
        raise LookupError(f"config_reference.SECTIONS names no such setting: {unknown}")
    if fields[0] not in starts:
        raise LookupError(f"the first setting, {fields[0]}, must start a section")
    grouped: list[tuple[Section, list[str]]] = []
    for name in fields:
        if name in starts:
            grouped.append((starts[name], []))
        grouped[-1][1].append(name)
    return grouped


def render() -> str:
    """The whole of docs/configuration.md."""
    unlimited = _words(UNLIMITED_WORDS)
    grouped = sections_of_fields()
    lines = [PREAMBLE.replace("{unlimited}", unlimited), "## Contents", ""]
    lines += [f"- [{section.title}](#{_anchor(section.title)})" for section, _ in grouped]
    for section, names in grouped:
        lines += ["", f"## {section.title}", ""]
        if section.intro:
            lines += [section.intro.replace("{unlimited}", unlimited), ""]
        lines += ["| Setting | Default | Type | What it does |", "|---|---|---|---|"]
        for name in names:
            field = Settings.model_fields[name]
            cells = (
                f"`{env_name(name, field)}`",
                default_text(name, field),
                type_text(name, field),
                _sentence(field.description or ""),
            )
            lines.append("| " + " | ".join(_cell(cell) for cell in cells) + " |")
    return "\n".join(lines) + "\n"


def _anchor(title: str) -> str:
    """GitHub's heading anchor: lower case, punctuation dropped, spaces as hyphens."""
    kept = "".join(char for char in title.lower() if char.isalnum() or char in " -_")
    return kept.replace(" ", "-")


if __name__ == "__main__":
    sys.stdout.write(render())
