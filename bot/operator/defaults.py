"""Bot-wide defaults the owner changes without a restart: each member's and each server's
default allowances (DEFAULT_USER_*, DEFAULT_GUILD_*), the whole bot's monthly budget
(BOT_MONTHLY_CREDITS) and the model /imagine uses (DEFAULT_VARIANT).

A value set by the owner is stored (`bot_defaults`) as typed and overrides the environment;
it is checked by the same rules as the environment's (`bot.settings.with_setting`), so a bad
value is refused with the same one-line reason and changes nothing. The settings in force
(`effective`) go to every listener at once (the ledger's policy, the generation service's
default model), and to every other process when they reload (bot/invalidation.py)."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from bot.errors import InvalidRequest, SettingsError
from bot.invalidation import Cache, announce
from bot.settings import ALLOWANCE_SETTINGS, Settings, with_setting
from bot.storage.db import Database, Tx

log = logging.getLogger(__name__)

EDITABLE_DEFAULTS: tuple[str, ...] = (
    *ALLOWANCE_SETTINGS,
    "bot_monthly_credits",
    "default_variant",
)
MAX_VALUE_CHARS = 40
RESET_WORDS = frozenset({"reset", "environment", "env"})
OWNER, ENVIRONMENT, BUILT_IN = "set by the owner", "environment", "built-in default"

# Called with the settings in force after every change (and after each reload).
Apply = Callable[[Settings], Awaitable[None]]


@dataclass(frozen=True)
class DefaultValue:
    """One editable default as it stands: its value in force and where that comes from."""

    name: str  # the setting, lower case (its environment variable in upper case)
    value: object  # None: unlimited (an allowance or the budget)
    source: str  # OWNER, ENVIRONMENT or BUILT_IN
    set_by: int | None = None
    set_at: float | None = None

    @property
    def shown(self) -> str:
        if self.value is None:
            return "unlimited"
        if isinstance(self.value, float):
            return f"{self.value:g}"
        return str(self.value)


@dataclass(frozen=True)
class _Stored:
    value: str
    updated_by: int
    updated_at: float


class BotDefaults:
    def __init__(
        self, db: Database, base: Settings, *, clock: Callable[[], float] = time.time
    ) -> None:
        self._db = db
        self._base = base  # the environment's settings, as the process started
        self._clock = clock
        self._stored: dict[str, _Stored] = {}
        self._listeners: list[Apply] = []
        self._refused: set[tuple[str, str]] = set()  # stored values warned about once
        self.effective = base

    def on_apply(self, listener: Apply) -> None:
        self._listeners.append(listener)

    async def load(self) -> None:
        """Read the owner's values and apply them (also how other processes' changes arrive).
        A stored value the rules no longer accept (say, a model whose key was removed) is
        skipped, with a warning, and the environment's stands."""
        rows = await self._db.fetch_all("SELECT * FROM bot_defaults")
        stored = {
            row["name"]: _Stored(row["value"], row["updated_by"], row["updated_at"])
            for row in rows
            if row["name"] in EDITABLE_DEFAULTS
        }
        effective = self._base
        for name, entry in stored.items():
            try:
                effective = with_setting(effective, name, entry.value)
            except SettingsError as exc:
                if (name, entry.value) not in self._refused:
                    self._refused.add((name, entry.value))
                    log.warning("the owner's %s is not applied: %s", name.upper(), exc)
        self._stored = stored
        await self._apply(effective)

    def shown(self) -> list[DefaultValue]:
        """Every editable default, in order, with where its value comes from."""
        values = []
        for name in EDITABLE_DEFAULTS:
            stored = self._stored.get(name)
            value = getattr(self.effective, name)
            if stored is not None and (name, stored.value) not in self._refused:
                values.append(
                    DefaultValue(name, value, OWNER, stored.updated_by, stored.updated_at)
                )
            else:
                source = ENVIRONMENT if name in self._base.model_fields_set else BUILT_IN
                values.append(DefaultValue(name, value, source))
        return values

    async def set(self, actor_id: int, name: str, text: str) -> DefaultValue:
        """Set one default (`text` as an admin would write it in the environment; "reset"
        goes back to the environment's). Raises InvalidRequest, and then nothing changed."""
        name = _editable(name)
        text = text.strip()
        if text.lower() in RESET_WORDS:
            await self.reset(actor_id, name)
            return next(value for value in self.shown() if value.name == name)
        if not text or len(text) > MAX_VALUE_CHARS:
            raise InvalidRequest(
                f"Give {name.upper()} a value of at most {MAX_VALUE_CHARS} characters, "
                "or “reset” for the environment's."
            )
        try:
            effective = with_setting(self.effective, name, text)
        except SettingsError as exc:
            raise InvalidRequest(f"{exc}. Nothing changed.") from None
        now = self._clock()

        async def write(tx: Tx) -> None:
            await announce(tx, Cache.BOT_DEFAULTS)
            await tx.execute(
                "INSERT INTO bot_defaults (name, value, updated_by, updated_at)"
                " VALUES (?,?,?,?) ON CONFLICT (name) DO UPDATE SET value = excluded.value,"
                " updated_by = excluded.updated_by, updated_at = excluded.updated_at",
                (name, text, actor_id, now),
            )

        await self._db.run(write)
        self._stored[name] = _Stored(text, actor_id, now)
        self._refused.discard((name, text))
        await self._apply(effective)
        log.info("owner %s set %s to %s", actor_id, name.upper(), text)
        return next(value for value in self.shown() if value.name == name)

    async def reset(self, actor_id: int, name: str) -> bool:
        """Back to the environment's value; False if the owner had not set it."""
        name = _editable(name)

        async def write(tx: Tx) -> int:
            await announce(tx, Cache.BOT_DEFAULTS)
            return await tx.execute("DELETE FROM bot_defaults WHERE name = ?", (name,))

        removed = await self._db.run(write)
        if removed:
            log.info("owner %s reset %s to the environment's", actor_id, name.upper())
        await self.load()
        return bool(removed)

    async def _apply(self, effective: Settings) -> None:
        self.effective = effective
        for listener in self._listeners:
            await listener(effective)


def _editable(name: str) -> str:
    key = name.strip().lower()
    if key not in EDITABLE_DEFAULTS:
        raise InvalidRequest(
            f"{name.upper()} can't be changed here; these can: "
            + ", ".join(n.upper() for n in EDITABLE_DEFAULTS)
            + "."
        )
    return key
