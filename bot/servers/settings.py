"""Per-server settings moderators change with /settings.

Settings are read on every request, so all of them live in memory (a few hundred bytes per
server) and every change is written through to SQLite together with its audit entry.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, fields, replace
from typing import Any

from bot.errors import InvalidRequest
from bot.invalidation import Cache, announce
from bot.providers.bfl_options import OUTPAINT_MODES
from bot.servers.audit import AuditLog
from bot.storage.db import Database, Row, Tx

MAX_SAFETY = 5  # BFL's most lenient safety_tolerance


@dataclass(frozen=True)
class ServerSettings:
    """What a server's moderators decided; a server that never changed anything has these
    defaults: every channel and variant, no approval queue, DMs not allowed."""

    guild_id: int
    enabled_channels: frozenset[int] | None = None  # None: every channel
    allowed_variants: frozenset[str] | None = None  # None: every variant of the bot
    default_variant: str | None = None  # None: the bot's DEFAULT_VARIANT
    max_megapixels: float | None = None
    safety_cap: int | None = None  # the most lenient safety_tolerance members may ask for
    allow_dms: bool = False
    allow_upload_edits: bool = True  # editing uploaded images outside age-restricted channels
    audit_channel_id: int | None = None
    approval_enabled: bool = False
    approval_channel_id: int | None = None
    trusted_roles: frozenset[int] = frozenset()
    strike_warn: int = 1
    strike_temp_block: int = 3
    strike_block: int = 5
    temp_block_hours: float = 24.0
    outpaint_mode: str = "high"  # BFL outpainting's `mode` for Zoom out, pan, Make square
    showcase_channel_id: int | None = None  # where shared results go; None: sharing is off
    # Private results (bot/community/publications.py): everywhere on the server, or in these
    # channels (threads follow their channel).
    private_everywhere: bool = False
    private_channels: frozenset[int] = frozenset()

    def channel_enabled(self, channel_id: int) -> bool:
        return self.enabled_channels is None or channel_id in self.enabled_channels

    def variant_allowed(self, key: str) -> bool:
        return self.allowed_variants is None or key in self.allowed_variants

    def effective_default(self, bot_default: str) -> str:
        """The variant /imagine uses here when a member doesn't choose: the server's own
        default, else the bot's (`GenerationService.pick_variant` decides the bot's)."""
        return self.default_variant or bot_default

    def results_private(self, channel_id: int, parent_channel_id: int | None = None) -> bool:
        """Whether the moderators made results private here."""
        channels = {channel_id, parent_channel_id or channel_id}
        return self.private_everywhere or not self.private_channels.isdisjoint(channels)

    def needs_approval(self, role_ids: Collection[int], *, is_moderator: bool) -> bool:
        return (
            self.approval_enabled
            and not is_moderator
            and not self.trusted_roles.intersection(role_ids)
        )


def in_offered_order(keys: Collection[str], offered: Sequence[str]) -> list[str]:
    """Variant keys in the order the bot offers its variants (`offered`), unknown ones last."""
    known = [key for key in offered if key in keys]
    return known + sorted(set(keys) - set(known))


_COLUMNS = tuple(f.name for f in fields(ServerSettings) if f.name != "guild_id")
_SETS = {"enabled_channels", "allowed_variants", "trusted_roles", "private_channels"}
# Sets where "none" is an empty set rather than NULL ("every one").
_EMPTY_SETS = {"trusted_roles", "private_channels"}


def _to_column(name: str, value: Any) -> Any:
    if name in _SETS:
        return None if value is None else json.dumps(sorted(value))
    if isinstance(value, bool):
        return int(value)
    return value


def _from_row(row: Row) -> ServerSettings:
    values: dict[str, Any] = {}
    for name in _COLUMNS:
        raw = row[name]
        if name in _SETS:
            value: Any = None if raw is None else frozenset(json.loads(raw))
            values[name] = frozenset() if name in _EMPTY_SETS and value is None else value
        elif name in {"allow_dms", "allow_upload_edits", "approval_enabled", "private_everywhere"}:
            values[name] = bool(raw)
        else:
            values[name] = raw
    return ServerSettings(guild_id=row["guild_id"], **values)


class SettingsStore:
    def __init__(
        self,
        db: Database,
        audit: AuditLog,
        *,
        known_variants: Callable[[], Collection[str]],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._db = db
        self._audit = audit
        self._known_variants = known_variants
        self._clock = clock
        self._cache: dict[int, ServerSettings] = {}

    async def load(self) -> None:
        rows = await self._db.fetch_all("SELECT * FROM guild_settings")
        self._cache = {row["guild_id"]: _from_row(row) for row in rows}

    def get(self, guild_id: int) -> ServerSettings:
        return self._cache.get(guild_id) or ServerSettings(guild_id)

    def guilds_allowing_dms(self) -> list[int]:
        return [guild for guild, settings in self._cache.items() if settings.allow_dms]

    def with_usable_default(
        self, current: ServerSettings, changes: Mapping[str, Any], *, bot_default: str
    ) -> dict[str, Any]:
        """A change of the allowed variants or the default, completed so that /imagine without
        a choice still works: when the allowed variants leave out the default it would use,
        the first allowed variant becomes the default. A default the moderator chose, or the
        bot's on a server allowing every variant, must be allowed (else InvalidRequest)."""
        proposed = replace(current, **changes)
        effective = proposed.effective_default(bot_default)
        if proposed.variant_allowed(effective):
            return dict(changes)
        if "default_variant" in changes or proposed.allowed_variants is None:
            raise InvalidRequest(f"The default ({effective}) must be one of the allowed variants.")
        allowed = in_offered_order(proposed.allowed_variants, list(self._known_variants()))
        return {**changes, "default_variant": allowed[0]}

    def validate(self, current: ServerSettings, changes: Mapping[str, Any]) -> ServerSettings:
        """The settings after `changes`, or InvalidRequest explaining what is wrong."""
        unknown = set(changes) - set(_COLUMNS)
        if unknown:
            raise ValueError(f"unknown settings {sorted(unknown)}")
        updated = replace(current, **changes)
        known = set(self._known_variants())
        if updated.allowed_variants is not None:
            strangers = updated.allowed_variants - known
            if strangers:
                raise InvalidRequest(f"There is no variant called {', '.join(sorted(strangers))}.")
            if not updated.allowed_variants:
                raise InvalidRequest("Allow at least one variant (or all of them).")
        if updated.default_variant is not None:
            if updated.default_variant not in known:
                raise InvalidRequest(f"There is no variant called {updated.default_variant}.")
            if not updated.variant_allowed(updated.default_variant):
                raise InvalidRequest(
                    f"The default variant ({updated.default_variant}) must be one of the "
                    "allowed variants."
                )
        if updated.max_megapixels is not None and not 0.05 <= updated.max_megapixels <= 16:
            raise InvalidRequest("The megapixel cap must be between 0.05 and 16.")
        if updated.safety_cap is not None and not 0 <= updated.safety_cap <= MAX_SAFETY:
            raise InvalidRequest(f"The safety cap must be between 0 and {MAX_SAFETY}.")
        if updated.enabled_channels is not None and not updated.enabled_channels:
            raise InvalidRequest("Enable at least one channel (or all of them).")
        if updated.approval_enabled and updated.approval_channel_id is None:
            raise InvalidRequest("Choose the moderators' channel where requests wait for review.")
        if not 1 <= updated.strike_warn <= updated.strike_temp_block <= updated.strike_block:
            raise InvalidRequest(
                "Strike thresholds must grow: warning ≤ temporary block ≤ block, from 1."
            )
        if updated.outpaint_mode not in OUTPAINT_MODES:
            raise InvalidRequest(f"The outpainting mode is one of: {', '.join(OUTPAINT_MODES)}.")
        if not 0 < updated.temp_block_hours <= 24 * 365:
            raise InvalidRequest("A temporary block lasts between a few minutes and a year.")
        return updated

    async def update(
        self, guild_id: int, actor_id: int, summary: str, **changes: Any
    ) -> ServerSettings:
        """Apply and audit a moderator's change (InvalidRequest changes nothing)."""
        updated = self.validate(self.get(guild_id), changes)
        entry = self._audit.entry(guild_id, actor_id, "settings", summary)
        now = self._clock()

        async def write(tx: Tx) -> None:

            await announce(tx, Cache.SERVER_SETTINGS)
            values = [_to_column(name, getattr(updated, name)) for name in _COLUMNS]
            await tx.execute(
                f"INSERT INTO guild_settings (guild_id, {', '.join(_COLUMNS)}, updated_at,"
                f" updated_by) VALUES ({', '.join('?' for _ in range(len(_COLUMNS) + 3))})"
                " ON CONFLICT (guild_id) DO UPDATE SET "
                + ", ".join(f"{name} = excluded.{name}" for name in (*_COLUMNS, "updated_at"))
                + ", updated_by = excluded.updated_by",
                (guild_id, *values, now, actor_id),
            )
            await self._audit.write(tx, entry)

        await self._db.run(write)
        self._cache[guild_id] = updated
        await self._audit.publish(entry)
        return updated
