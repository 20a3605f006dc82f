"""A server's LoRA catalogue: LoRAs uploaded to the BFL account, offered on the klein commands.

Moderators register a LoRA under a name members see, with its BFL `finetune_id`, the klein
base model it was uploaded for (which decides its `-finetuned` endpoint: see `LORA_BASES`),
a strength and an optional trigger phrase. Members pick one by name; `resolve` turns the
name into the `LoraChoice` a job keeps in its params, and `with_trigger` adds the trigger
phrase to the prompt. Read on every request and every autocomplete keystroke, so the whole
catalogue lives in memory (a few hundred bytes per LoRA, at most `MAX_SERVER_LORAS` a
server); every change is written with its audit entry and announced to the other processes
(bot/invalidation.py).
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass

from bot.errors import InvalidRequest
from bot.invalidation import Cache, announce
from bot.providers.bfl_options import (
    LORA_BASES,
    LORA_STRENGTH_DEFAULT,
    LORA_STRENGTH_MAX,
    LORA_STRENGTH_MIN,
    LoraBase,
)
from bot.servers.audit import AuditLog
from bot.storage.db import Database, Tx
from bot.text import code_excerpt
from bot.variants import LoraChoice, Variant

MAX_SERVER_LORAS = 100
MAX_NAME_CHARS = 40
MAX_TRIGGER_CHARS = 100
MAX_FINETUNE_ID_CHARS = 128
# As BFL names an uploaded LoRA (lowercase letters, digits, `-`, `_`); one shared by another
# organisation is `{owner_org_id}/{name}`.
FINETUNE_ID = re.compile(r"(?:[A-Za-z0-9_-]+/)?[a-z0-9_-]+")
# Names members type and see in results: plain words, so they read the same everywhere.
LORA_NAME = re.compile(r"[\w][\w .'-]*", re.UNICODE)

NOT_IN_DMS_TEXT = "LoRAs belong to a server's catalogue: use them in that server."
REMOVED_TEXT = (
    "The LoRA “{name}” this image used has been removed from this server's catalogue, so it "
    "can't be made again with it. Pick another LoRA, or make it without one."
)


@dataclass(frozen=True)
class ServerLora:
    guild_id: int
    name: str
    finetune_id: str
    base: str  # a key of LORA_BASES
    strength: float
    trigger: str | None = None

    @property
    def base_model(self) -> LoraBase:
        return LORA_BASES[self.base]

    def choice(self) -> LoraChoice:
        return LoraChoice(
            name=self.name,
            finetune_id=self.finetune_id,
            strength=self.strength,
            endpoint=self.base_model.endpoint,
            trigger=self.trigger,
        )


def name_key(name: str) -> str:
    """Names are unique per server whatever their case."""
    return " ".join(name.split()).casefold()


def with_trigger(prompt: str, lora: LoraChoice | None) -> str:
    """The prompt with the LoRA's trigger phrase, added in front when it is not already in
    it (case-insensitive): BFL wants the phrase in the prompt of a LoRA that has one. A
    blank prompt stays blank, to be refused as such."""
    trigger = lora.trigger if lora is not None else None
    if not trigger or not prompt.strip() or trigger.casefold() in prompt.casefold():
        return prompt
    return f"{trigger}, {prompt.strip()}"


def resolve_lora(
    catalogue: LoraCatalogue | None,
    wanted: str | LoraChoice | None,
    guild_id: int | None,
    variant: Variant,
) -> LoraChoice | None:
    """The LoRA a request uses (None: none), checked as `LoraCatalogue.resolve` does."""
    if wanted is None:
        return None
    if catalogue is None:
        raise InvalidRequest("LoRAs are not available on this bot.")
    return catalogue.resolve(guild_id, variant, wanted)


def lora_for_remix(lora: LoraChoice | None, chosen: Variant | None) -> LoraChoice | None:
    """A remix keeps its image's LoRA when the chosen model takes LoRAs of that size, as it
    keeps the options that model understands; otherwise it goes without."""
    base = next((b for b in LORA_BASES.values() if lora and b.endpoint == lora.endpoint), None)
    if lora is None or chosen is None or base is None or chosen.lora_size != base.size:
        return None
    return lora


def validate_lora(
    guild_id: int,
    name: str,
    finetune_id: str,
    base: str,
    strength: float | None,
    trigger: str | None,
) -> ServerLora:
    """A moderator's entry checked, or InvalidRequest saying what is wrong."""
    name = " ".join(name.split())
    if not name or len(name) > MAX_NAME_CHARS or not LORA_NAME.fullmatch(name):
        raise InvalidRequest(
            f"A LoRA's name is 1 to {MAX_NAME_CHARS} characters: letters, digits, spaces, "
            "dots, apostrophes, - and _."
        )
    finetune_id = finetune_id.strip()
    if len(finetune_id) > MAX_FINETUNE_ID_CHARS or not FINETUNE_ID.fullmatch(finetune_id):
        raise InvalidRequest(
            f"{code_excerpt(finetune_id, 60)} is not a BFL finetune id: use the name the LoRA "
            "was given when it was uploaded (lowercase letters, digits, - and _), or "
            "owner_org_id/name for one shared by another organisation."
        )
    if base not in LORA_BASES:
        raise InvalidRequest(
            f"The base must be one of the klein models LoRAs are uploaded for: "
            f"{', '.join(LORA_BASES)}."
        )
    value = LORA_STRENGTH_DEFAULT if strength is None else float(strength)
    if not math.isfinite(value) or not LORA_STRENGTH_MIN <= value <= LORA_STRENGTH_MAX:
        raise InvalidRequest(
            f"The strength must be between {LORA_STRENGTH_MIN:g} and {LORA_STRENGTH_MAX:g} "
            f"(BFL's default is {LORA_STRENGTH_DEFAULT:g}; 0.7–0.9 tames a LoRA that "
            "overpowers the prompt)."
        )
    phrase = " ".join(trigger.split()) if trigger else None
    if phrase is not None and len(phrase) > MAX_TRIGGER_CHARS:
        raise InvalidRequest(f"The trigger phrase must be at most {MAX_TRIGGER_CHARS} characters.")
    return ServerLora(guild_id, name, finetune_id, base, value, phrase or None)


class LoraCatalogue:
    def __init__(
        self, db: Database, audit: AuditLog, *, clock: Callable[[], float] = time.time
    ) -> None:
        self._db = db
        self._audit = audit
        self._clock = clock
        self._by_server: dict[int, dict[str, ServerLora]] = {}

    async def load(self) -> None:
        rows = await self._db.fetch_all(
            "SELECT guild_id, name, finetune_id, base, strength, trigger_phrase"
            " FROM server_loras ORDER BY guild_id, name_key"
        )
        loaded: dict[int, dict[str, ServerLora]] = {}
        for row in rows:
            if row["base"] not in LORA_BASES:  # a base this version no longer offers
                continue
            lora = ServerLora(
                guild_id=row["guild_id"],
                name=row["name"],
                finetune_id=row["finetune_id"],
                base=row["base"],
                strength=float(row["strength"]),
                trigger=row["trigger_phrase"],
            )
            loaded.setdefault(lora.guild_id, {})[name_key(lora.name)] = lora
        self._by_server = loaded

    # ----------------------------------------------------------------- reading
    def server_loras(self, guild_id: int) -> list[ServerLora]:
        """The server's LoRAs by name."""
        return list(self._by_server.get(guild_id, {}).values())

    def get(self, guild_id: int, name: str) -> ServerLora | None:
        return self._by_server.get(guild_id, {}).get(name_key(name))

    def compatible(self, guild_id: int | None, variant: Variant) -> list[ServerLora]:
        """The server's LoRAs a request for `variant` may use (its klein size)."""
        if guild_id is None or variant.lora_size is None:
            return []
        return [
            lora
            for lora in self.server_loras(guild_id)
            if lora.base_model.size == variant.lora_size
        ]

    def resolve(
        self, guild_id: int | None, variant: Variant, wanted: str | LoraChoice
    ) -> LoraChoice:
        """The LoRA a request names (`str`, as typed) or a stored job used (`LoraChoice`:
        Reroll, Remix), checked against this server's catalogue and the chosen model.
        A stored job's LoRA is sent as it was, if the server still has it. Raises
        InvalidRequest, naming what to do instead."""
        if guild_id is None:
            raise InvalidRequest(NOT_IN_DMS_TEXT)
        name = wanted.name if isinstance(wanted, LoraChoice) else wanted.strip()
        lora = self.get(guild_id, name)
        if isinstance(wanted, LoraChoice):
            if lora is None or lora.finetune_id != wanted.finetune_id:
                raise InvalidRequest(REMOVED_TEXT.format(name=wanted.name))
        elif lora is None:
            raise InvalidRequest(
                f"This server has no LoRA called {code_excerpt(name, MAX_NAME_CHARS)}. Pick one "
                "from the list that appears as you type (moderators: /settings loras)."
            )
        if variant.lora_size is None:
            raise InvalidRequest(f"{variant.label} doesn't take LoRAs: use a klein model.")
        if lora.base_model.size != variant.lora_size:
            raise InvalidRequest(
                f"The LoRA “{lora.name}” is made for {lora.base_model.label}, so it works with "
                f"the {lora.base_model.size.upper()} klein models only."
            )
        return wanted if isinstance(wanted, LoraChoice) else lora.choice()

    # ----------------------------------------------------------------- changes
    async def add(
        self,
        guild_id: int,
        actor_id: int,
        *,
        name: str,
        finetune_id: str,
        base: str,
        strength: float | None = None,
        trigger: str | None = None,
    ) -> ServerLora:
        """Register a LoRA (audited). InvalidRequest changes nothing."""
        lora = validate_lora(guild_id, name, finetune_id, base, strength, trigger)
        if self.get(guild_id, lora.name) is not None:
            raise InvalidRequest(
                f"This server already has a LoRA called “{lora.name}”. Remove it first with "
                "/settings lora-remove to change it."
            )
        if len(self.server_loras(guild_id)) >= MAX_SERVER_LORAS:
            raise InvalidRequest(
                f"This server already has {MAX_SERVER_LORAS} LoRAs, the most it can have. "
                "Remove one with /settings lora-remove first."
            )
        trigger_text = f", trigger “{lora.trigger}”" if lora.trigger else ""
        entry = self._audit.entry(
            guild_id,
            actor_id,
            "lora added",
            f"“{lora.name}”: {lora.finetune_id} on {lora.base}, strength {lora.strength:g}"
            f"{trigger_text}",
        )

        async def write(tx: Tx) -> None:
            await announce(tx, Cache.LORAS)
            await tx.execute(
                "INSERT INTO server_loras (guild_id, name_key, name, finetune_id, base, strength,"
                " trigger_phrase, added_at) VALUES (?,?,?,?,?,?,?,?)",
                (
                    guild_id,
                    name_key(lora.name),
                    lora.name,
                    lora.finetune_id,
                    lora.base,
                    lora.strength,
                    lora.trigger,
                    entry.at,
                ),
            )
            await self._audit.write(tx, entry)

        await self._db.run(write)
        self._by_server.setdefault(guild_id, {})[name_key(lora.name)] = lora
        await self._audit.publish(entry)
        return lora

    async def remove(self, guild_id: int, actor_id: int, name: str) -> ServerLora:
        """Unregister a LoRA (audited). Results made with it keep their LoRA's name; their
        Reroll says it is gone."""
        lora = self.get(guild_id, name)
        if lora is None:
            raise InvalidRequest(
                f"This server has no LoRA called {code_excerpt(name.strip(), MAX_NAME_CHARS)}."
            )
        entry = self._audit.entry(
            guild_id, actor_id, "lora removed", f"“{lora.name}” ({lora.finetune_id})"
        )

        async def write(tx: Tx) -> None:
            await announce(tx, Cache.LORAS)
            await tx.execute(
                "DELETE FROM server_loras WHERE guild_id = ? AND name_key = ?",
                (guild_id, name_key(lora.name)),
            )
            await self._audit.write(tx, entry)

        await self._db.run(write)
        self._by_server.get(guild_id, {}).pop(name_key(lora.name), None)
        await self._audit.publish(entry)
        return lora
