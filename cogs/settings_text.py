"""How server settings read and are typed in Discord: each setting's label and value in
/settings show, in replies and in the audit log (`SettingsText`), and the variant lists
moderators type in `/settings variants` (parsing and suggestions)."""

from __future__ import annotations

import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

from discord import app_commands

from bot.errors import InvalidRequest
from bot.moderation.terms import DEFAULT_TERMS
from bot.servers.settings import ServerSettings, in_offered_order
from bot.text import plural
from cogs.moderator import CHOICE_LIMIT, CHOICE_VALUE_LIMIT

ALL = "all"
BOT_DEFAULT = "bot-default"  # `/settings variants default:` value for "the bot's own default"

# Every setting, in the order /settings show lists them, with the name changes are logged under.
LABELS: dict[str, str] = {
    "enabled_channels": "Enabled channels",
    "allowed_variants": "Allowed variants",
    "default_variant": "Default variant",
    "max_megapixels": "Megapixel cap",
    "safety_cap": "Safety cap",
    "allow_dms": "Direct messages",
    "allow_upload_edits": "Editing uploaded images",
    "audit_channel_id": "Audit channel",
    "approval_enabled": "Approval queue",
    "approval_channel_id": "Approval channel",
    "trusted_roles": "Trusted roles",
    "strike_warn": "Warning at",
    "strike_temp_block": "Temporary block at",
    "strike_block": "Block at",
    "temp_block_hours": "Temporary block length",
    "outpaint_mode": "Zoom out / pan mode",
    "showcase_channel_id": "Showcase channel",
    "private_everywhere": "Private results",
    "private_channels": "Private results in",
}


def format_hours(hours: float) -> str:
    if hours < 1:
        return f"{hours * 60:g} min"
    return f"{hours:g} h"


@dataclass(frozen=True)
class SettingsText:
    """How settings read in /settings show, in replies and in the audit log."""

    variant_order: tuple[str, ...]  # the bot's variants, in the order it offers them
    bot_default: str

    def value(self, settings: ServerSettings, name: str) -> str:
        value: Any = getattr(settings, name)
        if name == "enabled_channels":
            return ALL if value is None else ", ".join(f"<#{c}>" for c in sorted(value))
        if name == "allowed_variants":
            return ALL if value is None else ", ".join(self.ordered(value))
        if name == "default_variant":
            return f"the bot's default, {self.bot_default}" if value is None else str(value)
        if name == "max_megapixels":
            return "no cap" if value is None else f"{value:g} MP"
        if name == "safety_cap":
            return "no cap" if value is None else f"at most {value}"
        if name == "allow_dms":
            return "allowed for members" if value else "not allowed"
        if name == "allow_upload_edits":
            return "anywhere" if value else "only in age-restricted channels"
        if name in ("audit_channel_id", "approval_channel_id"):
            return (
                ("off" if name == "audit_channel_id" else "not set")
                if value is None
                else (f"<#{value}>")
            )
        if name == "showcase_channel_id":
            return "off" if value is None else f"<#{value}>"
        if name == "approval_enabled":
            return "on" if value else "off"
        if name == "trusted_roles":
            return ", ".join(f"<@&{r}>" for r in sorted(value)) if value else "none"
        if name.startswith("strike_"):
            return plural(int(value), "refused prompt")
        if name == "temp_block_hours":
            return format_hours(float(value))
        if name == "private_everywhere":
            return "everywhere" if value else "only where chosen"
        if name == "private_channels":
            return ", ".join(f"<#{c}>" for c in sorted(value)) if value else "no channel"
        if name == "outpaint_mode":
            return "fast" if value == "fast" else "high fidelity"
        raise KeyError(name)

    def ordered(self, keys: Collection[str]) -> list[str]:
        return in_offered_order(keys, self.variant_order)

    def changes(self, before: ServerSettings, after: ServerSettings) -> list[str]:
        """One "Label: new (was old)" per changed setting."""
        return [
            f"{label}: {self.value(after, name)} (was {self.value(before, name)})"
            for name, label in LABELS.items()
            if getattr(before, name) != getattr(after, name)
        ]

    def show(self, settings: ServerSettings, *, server_terms: int) -> list[tuple[str, str]]:
        """The /settings show embed's fields: (title, text)."""

        def lines(*names: str) -> str:
            return "\n".join(f"{LABELS[n]}: {self.value(settings, n)}" for n in names)

        approval = lines("approval_enabled", "approval_channel_id", "trusted_roles")
        return [
            ("Where", lines("enabled_channels") + " (threads follow their channel)"),
            ("Models", lines("allowed_variants", "default_variant")),
            ("Limits", lines("max_megapixels", "safety_cap")),
            ("Zoom out, pan, Make square", lines("outpaint_mode")),
            ("Direct messages", self.value(settings, "allow_dms")),
            ("Editing uploaded images", self.value(settings, "allow_upload_edits")),
            ("Audit channel", self.value(settings, "audit_channel_id")),
            ("Private results", lines("private_everywhere", "private_channels")),
            ("Approval queue", approval),
            ("Showcase channel", self.value(settings, "showcase_channel_id")),
            (
                "Strikes",
                lines("strike_warn", "strike_temp_block", "strike_block", "temp_block_hours"),
            ),
            (
                "Banned terms",
                f"{plural(server_terms, 'server term')}, plus the built-in list of "
                f"{len(DEFAULT_TERMS)} (see /settings terms-list)",
            ),
        ]


def parse_variants(text: str, known: Sequence[str]) -> frozenset[str] | None:
    """`/settings variants allowed:` — "pro, flex" or "all" (None). Raises InvalidRequest."""
    names = [name for name in re.split(r"[\s,;]+", text.strip().lower()) if name]
    if not names:
        raise InvalidRequest(f"List at least one variant, or write {ALL}.")
    if ALL in names:
        return None
    strangers = sorted(set(names) - set(known))
    if strangers:
        raise InvalidRequest(
            f"There is no variant called {', '.join(strangers)}. Choose from: {', '.join(known)}."
        )
    return frozenset(names)


def variant_list_choices(current: str, known: Sequence[str]) -> list[app_commands.Choice[str]]:
    """Suggestions for a comma-separated list: complete the last name, keep the others."""
    parts = [p.strip().lower() for p in current.split(",")]
    done, last = [p for p in parts[:-1] if p in known], parts[-1]
    prefix = ", ".join(done)
    options = [key for key in known if key not in done and key.startswith(last)]
    values = [f"{prefix}, {key}" if prefix else key for key in options]
    if not done and ALL.startswith(last):
        values.insert(0, ALL)
    return [app_commands.Choice(name=v, value=v) for v in values if len(v) <= CHOICE_VALUE_LIMIT][
        :CHOICE_LIMIT
    ]
