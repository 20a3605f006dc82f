"""A member's own defaults (/prefer): the store, and the step that applies them to a request.

Kept per member, the same in every server and in direct messages: a member's taste (their
model, size, style suffix) is theirs wherever they ask, and one `/prefer` is easier than one
per server. Each server still decides what is allowed there: where its rules forbid a
default, the server's choice wins and the result says so in one line (`JobParams.notes`).

For other parts of the bot: `await preferences.get(user_id)` returns a frozen
`MemberPreferences` (everything unset for a member who never used /prefer); `.private` is the
member's wish that their results be shown to them alone.

What `apply_preferences` does (called by `GenerationService.validate`, before any check):
- only for a member's new request (/imagine, /flux, /edit, Edit with FLUX, a reply, the Edit
  button); Reroll and Remix reuse a job's final prompt and choices (`Draft.use_preferences`);
- an option given in the command always wins over the member's default;
- the variant, when the command names none (an edit of one of our results keeps its model);
- the size, except for an edit with reference images: that keeps its references' size
  unless the command gives one;
- prompt upsampling, only to a variant that has the option;
- the prompt suffix, appended to the prompt: it counts in the prompt's length and is
  checked for banned terms with it (a hit counts as a strike, as the prompt's would).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields, replace
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from bot.drafts import Draft, parse_size
from bot.errors import InvalidRequest
from bot.invalidation import Cache, announce
from bot.servers.settings import ServerSettings
from bot.storage.db import Database, Row, Tx
from bot.variants import MEGAPIXEL, SIZE_PRESETS, Variant

if TYPE_CHECKING:
    from bot.community.policy import Requester
    from bot.generation import GenerationService
    from bot.moderation.strikes import Moderation

MAX_SUFFIX_CHARS = 300
CACHE_SIZE = 20_000  # members' defaults kept in memory (a few hundred bytes each)
UPSAMPLING = "prompt_upsampling"  # the variant option (BFL's `disable_pup`, negated)
DIRECT_MESSAGES = 0  # the moderation "server" of direct messages: the built-in terms alone
UNCHANGED = " Nothing was changed."


class PreferenceField(StrEnum):
    VARIANT = "variant"
    SIZE = "size"
    PROMPT_SUFFIX = "prompt_suffix"
    PROMPT_UPSAMPLING = "prompt_upsampling"
    PRIVATE = "private"


@dataclass(frozen=True)
class MemberPreferences:
    """A member's defaults. None (False for `private`): not set, the server's applies."""

    user_id: int
    variant: str | None = None  # an offered variant name, e.g. "pro"
    size: str | None = None  # a SIZE_PRESETS name, or "WIDTHxHEIGHT"
    prompt_suffix: str | None = None
    prompt_upsampling: bool | None = None
    private: bool = False  # results shown to the member alone (the private delivery reads it)

    @property
    def is_empty(self) -> bool:
        return self == MemberPreferences(self.user_id)


_COLUMNS = tuple(f.name for f in fields(MemberPreferences) if f.name != "user_id")
_UNSET: dict[PreferenceField, Any] = {name: None for name in PreferenceField} | {
    PreferenceField.PRIVATE: False
}


def _from_row(row: Row) -> MemberPreferences:
    upsampling = row["prompt_upsampling"]
    return MemberPreferences(
        user_id=row["user_id"],
        variant=row["variant"],
        size=row["size"],
        prompt_suffix=row["prompt_suffix"],
        prompt_upsampling=None if upsampling is None else bool(upsampling),
        private=bool(row["private"]),
    )


def _column(value: Any) -> Any:
    return int(value) if isinstance(value, bool) else value


def normalise_size(text: str) -> str:
    """A size as typed: a preset's name (any case, spaces for underscores) or WIDTHxHEIGHT."""
    name = "_".join(text.strip().lower().split())
    if name in SIZE_PRESETS:
        return name
    try:
        width, height = parse_size(text)
    except InvalidRequest:
        width = height = None
    if width is None or height is None:
        raise InvalidRequest(
            "Write the size as a preset (such as landscape_16_9) or as WIDTHxHEIGHT, for "
            f"example 1024x768.{UNCHANGED}"
        )
    return f"{width}x{height}"


def size_pixels(size: str) -> tuple[int, int]:
    """The width and height a stored size (see `normalise_size`) stands for."""
    if size in SIZE_PRESETS:
        return SIZE_PRESETS[size]
    width, height = parse_size(size)
    assert width is not None and height is not None, "stored sizes are normalised"
    return width, height


def size_problem(size: str, variant: Variant) -> str | None:
    """Why `variant` can't make this size (InvalidRequest's text), or None."""
    try:
        variant.sizes.check(*size_pixels(size))
    except InvalidRequest as exc:
        return str(exc)
    return None


def size_text(size: str) -> str:
    width, height = size_pixels(size)
    return f"{size} ({width}×{height})" if size in SIZE_PRESETS else f"{width}×{height}"


def with_suffix(prompt: str, suffix: str) -> str:
    """The prompt with the suffix after it, once (a prompt ending with it is left as it is)."""
    prompt = prompt.strip()
    if prompt.casefold().endswith(suffix.casefold()):
        return prompt
    separator = " " if prompt.endswith((",", ";", ":", ".", "!", "?")) else ", "
    return prompt + separator + suffix


class SuffixTooLong(InvalidRequest):
    def __init__(self, length: int, suffix: str, variant: Variant) -> None:
        super().__init__(
            f"With your default prompt suffix ({len(suffix)} characters) the prompt is {length} "
            f"characters; {variant.label} accepts at most {variant.max_prompt_chars}. Shorten "
            "the prompt, or change the suffix with /prefer."
        )


# --------------------------------------------------------------------------- applying
@dataclass(frozen=True)
class Place:
    """Where a request is made, as the apply step needs it (built by GenerationService)."""

    variants: Mapping[str, Variant]  # every variant the bot offers, by its offered name
    needs_edit: bool  # the request edits images: only edit-capable variants qualify
    server: ServerSettings | None  # None: direct messages
    name_of: Callable[[Variant], str]  # a variant's offered name
    # The variant a choice gets here (None: the server's default); raises InvalidRequest.
    pick: Callable[[str | None], Variant]

    def allowed(self, name: str) -> bool:
        return self.server is None or self.server.variant_allowed(name)


def place_for(generation: GenerationService, requester: Requester, needs_edit: bool) -> Place:
    """Where `requester` asks, with the variant choice `generation` makes there."""
    policy = generation.policy
    server = policy.server(requester) if policy else None
    default = server.default_variant if server else None
    return Place(
        generation.variants,
        needs_edit,
        server,
        generation.offered_name,
        lambda key: generation.pick_variant(key, needs_edit=needs_edit, server_default=default),
    )


@dataclass(frozen=True)
class Applied:
    draft: Draft
    notes: tuple[str, ...] = ()  # where the server's rules won, one line each
    suffix_applied: bool = False


def apply_preferences(draft: Draft, preferences: MemberPreferences | None, place: Place) -> Applied:
    """The draft with the member's defaults filled in where the command gave nothing, and a
    note for each default the server's rules set aside. Raises SuffixTooLong; any other
    problem is left for the checks that follow (they word it as for any request)."""
    if preferences is None or preferences.is_empty or not draft.use_preferences:
        return Applied(draft)
    notes: list[str] = []
    chosen = draft.variant
    if chosen is None and preferences.variant is not None:
        problem = _variant_problem(preferences.variant, place)
        if problem is None:
            chosen = preferences.variant
        else:
            try:
                instead = place.name_of(place.pick(None))
            except InvalidRequest:
                return Applied(draft)  # no variant at all: validation says so
            notes.append(
                f"Your default model {preferences.variant} {problem}, so this used {instead}."
            )
    try:
        variant = place.pick(chosen)
    except InvalidRequest:
        return Applied(draft)  # an unknown choice: validation refuses it with its reason
    changes: dict[str, Any] = {"variant": chosen}
    sized = draft.size_preset or draft.width or draft.height
    if preferences.size is not None and not sized and not (draft.references or draft.stored):
        size, note = _size_for(preferences.size, variant, place)
        changes.update(size)
        notes += [note] if note else []
    if (
        preferences.prompt_upsampling is not None
        and draft.options.get(UPSAMPLING) is None
        and any(spec.name == UPSAMPLING for spec in variant.options)
    ):
        changes["options"] = {**draft.options, UPSAMPLING: preferences.prompt_upsampling}
    suffix = preferences.prompt_suffix
    applied = bool(suffix and draft.prompt.strip())
    if suffix and applied:
        prompt = with_suffix(draft.prompt, suffix)
        # Over the limit because of the suffix (a prompt too long alone is refused as usual).
        if len(prompt) > variant.max_prompt_chars >= len(draft.prompt.strip()):
            raise SuffixTooLong(len(prompt), suffix, variant)
        changes["prompt"] = prompt
    return Applied(replace(draft, **changes), tuple(notes), applied)


def _variant_problem(name: str, place: Place) -> str | None:
    variant = place.variants.get(name)
    if variant is None or not place.allowed(name):
        return "isn't offered here"
    if place.needs_edit and not variant.edit_capable:
        return "can't edit images"
    return None


def _size_for(size: str, variant: Variant, place: Place) -> tuple[dict[str, Any], str | None]:
    """The draft's size fields for the member's default size, or none and why not."""
    problem = size_problem(size, variant)
    if problem is not None:
        return {}, (
            f"Your default size {size_text(size)} isn't possible with {variant.label}, so this "
            "used its standard size."
        )
    width, height = size_pixels(size)
    cap = place.server.max_megapixels if place.server else None
    if cap is not None and width * height / MEGAPIXEL > cap + 1e-9:
        return {}, (
            f"Your default size {size_text(size)} is over this server's {cap:g} MP limit, so "
            "this used the standard size."
        )
    return {"width": width, "height": height}, None


# --------------------------------------------------------------------------- the store
class Preferences:
    """The members' defaults. Every request reads them, so the most recently used are kept
    in memory (at most `cache_size`; a member without defaults too, the usual case): a burst
    of requests adds no database trip each. A change is announced to the other processes,
    which forget what they kept (bot/invalidation.py)."""

    def __init__(
        self,
        db: Database,
        variants: Mapping[str, Variant],
        *,
        moderation: Moderation | None = None,
        clock: Callable[[], float] = time.time,
        cache_size: int = CACHE_SIZE,
    ) -> None:
        self._db = db
        self._variants = variants  # by offered name
        self._moderation = moderation
        self._clock = clock
        self._cache: OrderedDict[int, MemberPreferences] = OrderedDict()
        self._cache_size = cache_size
        # Bumped by `forget_all`: a read begun before it must not keep what it read.
        self._generation = 0

    async def get(self, user_id: int) -> MemberPreferences:
        """The member's defaults (everything unset if they never chose any)."""
        kept = self._cache.get(user_id)
        if kept is not None:
            self._cache.move_to_end(user_id)
            return kept
        generation = self._generation
        row = await self._db.fetch_one(
            "SELECT * FROM member_preferences WHERE user_id = ?", (user_id,)
        )
        found = MemberPreferences(user_id) if row is None else _from_row(row)
        if generation == self._generation:
            self._keep(found)
        return found

    async def forget_all(self) -> None:
        """Another process changed someone's defaults (or time to check): read them afresh."""
        self._generation += 1
        self._cache.clear()

    def _keep(self, preferences: MemberPreferences) -> None:
        self._cache[preferences.user_id] = preferences
        self._cache.move_to_end(preferences.user_id)
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)

    async def set(
        self, user_id: int, changes: Mapping[PreferenceField, Any], *, guild_id: int | None
    ) -> MemberPreferences:
        """Change some defaults at once, after checking them all: InvalidRequest changes
        nothing. `guild_id`: where the member asks (a suffix must pass its banned terms)."""
        if not changes:
            raise InvalidRequest("Choose at least one default to set. Nothing was changed.")
        values = {PreferenceField(name): value for name, value in changes.items()}
        if values.get(PreferenceField.PROMPT_SUFFIX) is not None:
            values[PreferenceField.PROMPT_SUFFIX] = await self._checked_suffix(
                str(values[PreferenceField.PROMPT_SUFFIX]), guild_id
            )
        if values.get(PreferenceField.SIZE) is not None:
            values[PreferenceField.SIZE] = normalise_size(str(values[PreferenceField.SIZE]))

        async def write(tx: Tx) -> MemberPreferences:
            await tx.lock(f"preferences:{user_id}")  # two changes at once: one after the other
            row = await tx.fetch_one(
                "SELECT * FROM member_preferences WHERE user_id = ?", (user_id,)
            )
            current = MemberPreferences(user_id) if row is None else _from_row(row)
            updated = self.check(replace(current, **values))
            await self._write(tx, updated)
            return updated

        return self._changed(await self._db.run(write))

    async def clear(self, user_id: int, field: PreferenceField | None) -> MemberPreferences:
        """Forget one default (None: all of them)."""

        async def write(tx: Tx) -> MemberPreferences:
            await tx.lock(f"preferences:{user_id}")
            row = await tx.fetch_one(
                "SELECT * FROM member_preferences WHERE user_id = ?", (user_id,)
            )
            current = MemberPreferences(user_id) if row is None else _from_row(row)
            updated = (
                MemberPreferences(user_id)
                if field is None
                else replace(current, **{field.value: _UNSET[field]})
            )
            await self._write(tx, updated)
            return updated

        return self._changed(await self._db.run(write))

    async def erase(self, user_id: int) -> int:
        """Delete the member's defaults (their /privacy delete); 1 if they had any, else 0."""

        async def delete(tx: Tx) -> int:
            await announce(tx, Cache.MEMBER_PREFERENCES)
            return await tx.execute("DELETE FROM member_preferences WHERE user_id = ?", (user_id,))

        removed = await self._db.run(delete)
        self._changed(MemberPreferences(user_id))
        return removed

    def _changed(self, updated: MemberPreferences) -> MemberPreferences:
        self._generation += 1  # a read of the old row still in flight keeps nothing
        self._keep(updated)
        return updated

    async def _write(self, tx: Tx, updated: MemberPreferences) -> None:
        await announce(tx, Cache.MEMBER_PREFERENCES)  # other processes forget theirs
        if updated.is_empty:  # nothing left to keep: no row
            await tx.execute("DELETE FROM member_preferences WHERE user_id = ?", (updated.user_id,))
            return
        values = [_column(getattr(updated, name)) for name in _COLUMNS]
        await tx.execute(
            f"INSERT INTO member_preferences (user_id, {', '.join(_COLUMNS)}, updated_at)"
            f" VALUES ({', '.join('?' for _ in range(len(_COLUMNS) + 2))})"
            " ON CONFLICT (user_id) DO UPDATE SET "
            + ", ".join(f"{name} = excluded.{name}" for name in (*_COLUMNS, "updated_at")),
            (updated.user_id, *values, self._clock()),
        )

    def check(self, wanted: MemberPreferences) -> MemberPreferences:
        """`wanted` if every default in it can be used somewhere on this bot; else
        InvalidRequest saying what is wrong."""
        if wanted.variant is not None and wanted.variant not in self._variants:
            offered = ", ".join(self._variants)
            raise InvalidRequest(
                f"There is no model called “{wanted.variant}” on this bot. Choose one of: "
                f"{offered}.{UNCHANGED}"
            )
        if wanted.size is not None:
            candidates = (
                [self._variants[wanted.variant]] if wanted.variant else self._variants.values()
            )
            problems = [size_problem(wanted.size, variant) for variant in candidates]
            if problems and None not in problems:
                raise InvalidRequest(f"{problems[0]}{UNCHANGED}")
        if wanted.prompt_upsampling is not None and not any(
            spec.name == UPSAMPLING for v in self._variants.values() for spec in v.options
        ):
            raise InvalidRequest(f"None of this bot's models has prompt upsampling.{UNCHANGED}")
        return wanted

    async def _checked_suffix(self, text: str, guild_id: int | None) -> str:
        suffix = " ".join(text.split())  # one line: it is appended to prompts
        if not suffix:
            raise InvalidRequest(
                f"The prompt suffix is empty. To remove yours, use /prefer clear.{UNCHANGED}"
            )
        if len(suffix) > MAX_SUFFIX_CHARS:
            raise InvalidRequest(
                f"The prompt suffix is {len(suffix)} characters; the most is {MAX_SUFFIX_CHARS}."
                f"{UNCHANGED}"
            )
        # Checked again with every prompt it is added to (a hit there counts as a strike);
        # here only to refuse it early, without a strike.
        if self._moderation is not None:
            place = DIRECT_MESSAGES if guild_id is None else guild_id
            if await self._moderation.first_hit(place, suffix) is not None:
                raise InvalidRequest(
                    f"The prompt suffix contains a term that isn't allowed here.{UNCHANGED}"
                )
        return suffix
