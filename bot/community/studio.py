"""Studios: shared creation threads, like AI Horde's parties.

A member opens one from a text channel with `/studio start`; the bot makes a public thread
where every prompt gets the studio's theme appended, must contain its required words, and
draws on the studio's own budget (an extra cap: the server's allowances keep applying through
the ledger). Any member's reply to an image there edits it, so the thread grows one shared
chain of images. A studio ends when its time is up, or early when its starter or a moderator
ends it: the bot posts a gallery (who made what, with a contact sheet) in the thread and in its
channel, then archives and locks the thread.

This module is the rules and the store (SQLite, no Discord). The cog (cogs/studio.py) creates
the thread and implements `StudioView` for everything that is posted or changed in Discord.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import math
import re
import sqlite3
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum
from functools import partial
from typing import Any, Protocol

from PIL import Image, ImageDraw, ImageFont

from bot.community.policy import CommunityPolicy, Requester
from bot.errors import InvalidRequest
from bot.jobs.models import GenerationRequest, Job
from bot.ledger import Metric, credits_to_mc, format_amount
from bot.periodic import repeat
from bot.servers.audit import BOT_ACTOR, AuditEntry, AuditLog
from bot.storage.db import Database
from bot.text import MESSAGE_LIMIT, one_line, truncate
from bot.variants import ReferenceSize, Variant

log = logging.getLogger(__name__)

MAX_THEME_CHARS = 200
MAX_REQUIRED_WORDS = 10
MAX_WORD_CHARS = 40
DEFAULT_HOURS = 24.0
MIN_HOURS = 0.1  # six minutes
MAX_HOURS = 168.0  # a week, which is also Discord's longest auto-archive delay
MAX_BUDGET_CREDITS = 1_000_000.0
THREAD_NAME_CHARS = 100  # Discord's limit
# How often ended studios are looked for; the sweep also runs once right after startup.
SWEEP_SECONDS = 30.0
# An ended studio waits for the jobs still running in its thread before its gallery is
# posted and the thread archived; past this, it closes anyway (late results go to the parent).
DRAIN_SECONDS = 15 * 60.0

GALLERY_FILENAME = "studio-gallery.png"
SHEET_MAX_IMAGES = 30  # a 5×6 grid at most: the gallery lists the rest
SHEET_TILE = 256
SHEET_COLUMNS = 5
SHEET_GAP = 8
SHEET_BACKGROUND = (43, 45, 49)  # Discord's dark theme
SHEET_PLACEHOLDER = (64, 66, 72)
SHEET_TEXT = (255, 255, 255)
SHEET_LABEL = (0, 0, 0)
# Results are at most a few megapixels; anything far larger is not ours, so it is skipped.
SHEET_SOURCE_MAX_PIXELS = 50_000_000

LOCKED_TEXT = "This studio is locked: no new images can be made here."
ENDED_TEXT = "This studio has ended, so no new images can be made here."
NOT_A_STUDIO_TEXT = "This command works inside a studio's thread."
NOT_ALLOWED_TEXT = (
    "Only the person who started this studio or a moderator (Manage Server or Manage Threads) "
    "can {action} it."
)
ALREADY_LOCKED_TEXT = "This studio is already locked. Use `/studio end` to post its gallery."
ALREADY_ENDED_TEXT = "This studio has already ended."


class StudioState(StrEnum):
    OPEN = "open"
    LOCKED = "locked"  # no new requests; members can no longer post in the thread
    ENDED = "ended"


class StudioBudgetExceeded(InvalidRequest):
    """The request would take the studio's thread over its budget; nothing was written."""


@dataclass(frozen=True)
class Studio:
    thread_id: int
    guild_id: int
    parent_channel_id: int
    starter_id: int
    theme: str
    required_words: tuple[str, ...]
    ends_at: float
    budget_mc: int | None  # None: only the server's allowances apply
    state: StudioState
    created_at: float
    gallery_message_id: int | None = None  # in the parent channel; 0: could not be posted
    thread_gallery_message_id: int | None = None  # in the thread; 0: could not be posted
    finished_at: float | None = None  # every ending step done

    @property
    def suffix(self) -> str:
        return f", {self.theme}"

    def without_theme(self, prompt: str) -> str:
        """The member's own words: a stored prompt (Reroll, Remix) already has the theme."""
        prompt = prompt.strip()
        if prompt.casefold().endswith(self.suffix.casefold()):
            return prompt[: -len(self.suffix)].rstrip()
        return prompt

    def missing_words(self, prompt: str) -> list[str]:
        return [word for word in self.required_words if not _contains(prompt, word)]

    def may_manage(self, user_id: int, *, is_moderator: bool) -> bool:
        return is_moderator or user_id == self.starter_id

    def is_due(self, now: float) -> bool:
        return self.state is not StudioState.ENDED and self.ends_at <= now

    @property
    def needs_finishing(self) -> bool:
        return self.state is StudioState.ENDED and self.finished_at is None

    def closed_text(self, now: float) -> str | None:
        """Why no new request is accepted here, or None while it is open."""
        if self.state is StudioState.ENDED or self.ends_at <= now:
            return ENDED_TEXT
        if self.state is StudioState.LOCKED:
            return LOCKED_TEXT
        return None


def _contains(prompt: str, word: str) -> bool:
    """Whole words, case-insensitive: "cat" is not found in "category". Phrases match with
    any spacing between their words."""
    pattern = r"\s+".join(re.escape(part) for part in word.split())
    return re.search(rf"(?<!\w){pattern}(?!\w)", prompt, re.IGNORECASE) is not None


def parse_words(text: str | None) -> tuple[str, ...]:
    """Comma-separated required words, trimmed, without blanks or repeats (any case)."""
    words: list[str] = []
    for raw in (text or "").split(","):
        word = one_line(raw)
        if word and word.casefold() not in {w.casefold() for w in words}:
            words.append(word)
    return tuple(words)


# --------------------------------------------------------------------------- starting
@dataclass(frozen=True)
class StudioPlan:
    """A validated `/studio start`, before its thread exists."""

    theme: str
    required_words: tuple[str, ...]
    hours: float
    budget_mc: int | None

    @property
    def thread_name(self) -> str:
        return truncate(f"🎨 {self.theme}", THREAD_NAME_CHARS)


def make_plan(
    theme: str, required_words: str | None, hours: float, budget_credits: float | None
) -> StudioPlan:
    """Check what was typed; raises InvalidRequest with what to change."""
    theme = one_line(theme)
    if not theme:
        raise InvalidRequest("Give the studio a theme, e.g. “watercolour, soft morning light”.")
    if len(theme) > MAX_THEME_CHARS:
        raise InvalidRequest(f"A studio's theme can be at most {MAX_THEME_CHARS} characters.")
    words = parse_words(required_words)
    if len(words) > MAX_REQUIRED_WORDS:
        raise InvalidRequest(f"A studio can require at most {MAX_REQUIRED_WORDS} words.")
    long = [w for w in words if len(w) > MAX_WORD_CHARS]
    if long:
        raise InvalidRequest(
            f"Required words can be at most {MAX_WORD_CHARS} characters (“{long[0][:60]}”)."
        )
    if not MIN_HOURS <= hours <= MAX_HOURS:
        raise InvalidRequest(
            f"A studio lasts between {MIN_HOURS:g} and {MAX_HOURS:g} hours (a week)."
        )
    budget_mc = None
    if budget_credits is not None:
        budget_mc = credits_to_mc(budget_credits)
        if budget_mc <= 0 or budget_credits > MAX_BUDGET_CREDITS:
            raise InvalidRequest(
                f"A studio's budget is between 0.001 and {MAX_BUDGET_CREDITS:,.0f} credits; "
                "leave it empty for no budget of its own."
            )
    return StudioPlan(theme, words, hours, budget_mc)


# --------------------------------------------------------------------------- texts
def _budget_text(budget_mc: int) -> str:
    return format_amount(Metric.CREDITS, budget_mc)


def _words_text(words: Sequence[str]) -> str:
    return ", ".join(f"**{word}**" for word in words)


def intro_text(studio: Studio) -> str:
    """The studio's first message in its thread: the rules and how to take part."""
    lines = [
        f"🎨 **Studio: {studio.theme}** — opened by <@{studio.starter_id}>",
        f"Every image made here gets the theme added to its prompt (“…{studio.suffix}”).",
    ]
    if studio.required_words:
        lines.append(f"Every prompt must include: {_words_text(studio.required_words)}.")
    if studio.budget_mc is not None:
        lines.append(
            f"Budget: {_budget_text(studio.budget_mc)} for this thread "
            "(the server's allowances apply too)."
        )
    lines += [
        f"Ends <t:{int(studio.ends_at)}:f> (<t:{int(studio.ends_at)}:R>); then a gallery of "
        "everything made here is posted.",
        "Use `/imagine` here, or reply to any image in this thread with what to change — "
        "no need to mention me.",
    ]
    return "\n".join(lines)


def announcement_text(studio: Studio) -> str:
    """What the parent channel sees when a studio opens."""
    return (
        f"🎨 <@{studio.starter_id}> opened a studio: <#{studio.thread_id}> — “{studio.theme}”. "
        f"Everyone's welcome until <t:{int(studio.ends_at)}:f>."
    )


def ending_text(studio: Studio, running_jobs: int) -> str:
    """The answer to `/studio end`."""
    where = f"here and in <#{studio.parent_channel_id}>"
    if not running_jobs:
        return f"Ending the studio: its gallery is being posted {where}."
    images = "image is" if running_jobs == 1 else "images are"
    return (
        f"Ending the studio: no new requests. {running_jobs} {images} still being made; "
        f"the gallery is posted {where} once they are done."
    )


def lock_notice(studio: Studio, actor_id: int) -> str:
    return (
        f"🔒 <@{actor_id}> locked this studio: no new images. Its gallery is posted "
        f"<t:{int(studio.ends_at)}:R>, or earlier with `/studio end`."
    )


@dataclass(frozen=True)
class GalleryItem:
    number: int
    job_id: str
    user_id: int
    prompt: str  # the member's words, without the theme
    message_id: int
    edit_of: int | None  # the number of the image it edits, when that is in the gallery

    def line(self, studio: Studio) -> str:
        link = (
            f"https://discord.com/channels/{studio.guild_id}/{studio.thread_id}/{self.message_id}"
        )
        edit = f" (edit of #{self.edit_of})" if self.edit_of is not None else ""
        prompt = truncate(one_line(self.prompt).replace("`", "'"), 60)
        return f"**#{self.number}** <@{self.user_id}>{edit} · `{prompt}` · [view]({link})"


def gallery_text(studio: Studio, items: Sequence[GalleryItem], *, in_thread: bool) -> str:
    """Who made what, numbered like the contact sheet, within one message."""
    where = "" if in_thread else f" from <#{studio.thread_id}>"
    lines = [f"🖼️ **Studio gallery: {truncate(studio.theme, 120)}**{where}"]
    if not items:
        lines.append("No images were made in this studio.")
        return "\n".join(lines)
    makers = len({item.user_id for item in items})
    lines.append(
        f"{len(items)} {'image' if len(items) == 1 else 'images'} by {makers} "
        f"{'member' if makers == 1 else 'members'}, in a studio opened by <@{studio.starter_id}>."
    )
    reserve = 60  # room for the "and N more" line
    used = sum(len(line) + 1 for line in lines)
    for index, item in enumerate(items):
        line = item.line(studio)
        if used + len(line) + 1 > MESSAGE_LIMIT - reserve:
            lines.append(f"…and {len(items) - index} more in <#{studio.thread_id}>.")
            break
        lines.append(line)
        used += len(line) + 1
    return "\n".join(lines)


def contact_sheet(tiles: Sequence[tuple[int, bytes | None]]) -> bytes:
    """A PNG grid of numbered thumbnails (the numbers of the gallery's lines); an image that
    cannot be read becomes a grey tile with its number, so the numbering stays right."""
    count = len(tiles)
    columns = min(SHEET_COLUMNS, max(1, count))
    rows = max(1, math.ceil(count / columns))
    step = SHEET_TILE + SHEET_GAP
    sheet = Image.new(
        "RGB", (SHEET_GAP + columns * step, SHEET_GAP + rows * step), SHEET_BACKGROUND
    )
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default(size=22)
    for index, (number, data) in enumerate(tiles):
        x = SHEET_GAP + (index % columns) * step
        y = SHEET_GAP + (index // columns) * step
        thumb = _thumbnail(data)
        if thumb is None:
            draw.rectangle((x, y, x + SHEET_TILE - 1, y + SHEET_TILE - 1), fill=SHEET_PLACEHOLDER)
        else:
            sheet.paste(
                thumb, (x + (SHEET_TILE - thumb.width) // 2, y + (SHEET_TILE - thumb.height) // 2)
            )
        label = f"#{number}"
        left, top, right, bottom = draw.textbbox((0, 0), label, font=font)
        draw.rectangle((x, y, x + right - left + 12, y + bottom - top + 10), fill=SHEET_LABEL)
        draw.text((x + 6 - left, y + 5 - top), label, fill=SHEET_TEXT, font=font)
    buffer = io.BytesIO()
    sheet.save(buffer, "PNG", optimize=True)
    return buffer.getvalue()


def _thumbnail(data: bytes | None) -> Image.Image | None:
    if not data:
        return None
    try:
        with Image.open(io.BytesIO(data)) as image:
            if image.width * image.height > SHEET_SOURCE_MAX_PIXELS:
                return None
            image.draft("RGB", (SHEET_TILE, SHEET_TILE))  # JPEG: decode at a fraction of size
            thumb = image.convert("RGB")
    except (OSError, ValueError, Image.DecompressionBombError):
        return None
    thumb.thumbnail((SHEET_TILE, SHEET_TILE))
    return thumb


# --------------------------------------------------------------------------- the store
class StudioView(Protocol):
    """What the Discord layer does for a studio (see cogs/studio.py)."""

    async def read_image(self, studio: Studio, message_id: int) -> bytes | None:
        """The first image of a result message in the thread (None if it is gone)."""
        ...

    async def post(self, channel_id: int, text: str, sheet: bytes | None) -> int | None:
        """Post a message (with the contact sheet, if any) without pinging anyone; the
        message's id, or None when the channel is gone or the bot may not post there."""
        ...

    async def lock_thread(self, studio: Studio) -> None: ...

    async def close_thread(self, studio: Studio) -> None:
        """Archive and lock the thread (nothing if it is gone)."""
        ...


def _from_row(row: sqlite3.Row) -> Studio:
    return Studio(
        thread_id=row["thread_id"],
        guild_id=row["guild_id"],
        parent_channel_id=row["parent_channel_id"],
        starter_id=row["starter_id"],
        theme=row["theme"],
        required_words=tuple(json.loads(row["required_words"])),
        ends_at=row["ends_at"],
        budget_mc=row["budget_mc"],
        state=StudioState(row["state"]),
        created_at=row["created_at"],
        gallery_message_id=row["gallery_message_id"],
        thread_gallery_message_id=row["thread_gallery_message_id"],
        finished_at=row["finished_at"],
    )


def estimate_mc(request: GenerationRequest) -> int:
    """The job's estimated cost, as the engine reserves it."""
    references = [ReferenceSize(image.width, image.height) for image in request.inputs]
    return credits_to_mc(request.variant.estimate_cost(request.params, references))


# What a studio's thread has used: each job's ledger row counts its reservation while it runs,
# then what it was charged (0 when refunded).
_SPENT_SQL = (
    "SELECT COALESCE(SUM(ledger.credits_mc), 0) FROM jobs"
    " JOIN ledger ON ledger.job_id = jobs.id WHERE jobs.channel_id = ?"
)
_UPDATABLE = frozenset({"gallery_message_id", "thread_gallery_message_id", "finished_at"})


class Studios:
    """Studios in SQLite, mirrored in memory: the rules are applied on every request in any
    channel, synchronously, so looking one up must not need the database."""

    def __init__(
        self,
        db: Database,
        audit: AuditLog,
        *,
        policy: CommunityPolicy | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._db = db
        self._audit = audit
        self._policy = policy
        self.clock = clock  # tests move time forward through this
        self.sweep_interval = SWEEP_SECONDS
        self.view: StudioView | None = None
        self._studios: dict[int, Studio] = {}
        self._finishing: set[int] = set()  # endings in progress (a command and the sweep)
        self.drain_seconds = DRAIN_SECONDS
        # When this process first found each ended studio waiting for its jobs.
        self._draining_since: dict[int, float] = {}
        self._tasks: set[asyncio.Task[Any]] = set()

    async def load(self) -> None:
        # Ended studios stay known, so that a thread a moderator reopens still refuses requests.
        rows = await self._db.fetch_all("SELECT * FROM studios")
        self._studios = {row["thread_id"]: _from_row(row) for row in rows}

    def get(self, thread_id: int) -> Studio | None:
        return self._studios.get(thread_id)

    def require(self, channel_id: int | None) -> Studio:
        studio = self._studios.get(channel_id or 0)
        if studio is None:
            raise InvalidRequest(NOT_A_STUDIO_TEXT)
        return studio

    def accepts_replies(self, channel_id: int) -> bool:
        """In an open studio any reply to an image is a request (no mention needed)."""
        studio = self._studios.get(channel_id)
        return studio is not None and studio.closed_text(self.clock()) is None

    # ------------------------------------------------------------------ request rules
    def apply(self, channel_id: int, prompt: str, variant: Variant) -> str:
        """The prompt to send for a request made in `channel_id`: with a studio's theme, after
        its rules are checked. Raises InvalidRequest."""
        studio = self._studios.get(channel_id)
        if studio is None:
            return prompt
        closed = studio.closed_text(self.clock())
        if closed is not None:
            raise InvalidRequest(closed)
        own = studio.without_theme(prompt)
        if not own:
            return own  # the variant asks for a prompt, as anywhere else
        missing = studio.missing_words(own)
        if missing:
            raise InvalidRequest(
                f"Every prompt in this studio must include {_words_text(studio.required_words)}; "
                f"yours is missing {_words_text(missing)}. Add "
                f"{'it' if len(missing) == 1 else 'them'} and try again."
            )
        themed = own + studio.suffix
        if len(themed) > variant.max_prompt_chars:
            raise InvalidRequest(
                f"With this studio's theme added, the prompt is {len(themed)} characters; "
                f"{variant.label} accepts at most {variant.max_prompt_chars}. Shorten it by "
                f"{len(themed) - variant.max_prompt_chars}."
            )
        return themed

    async def precheck(self, request: GenerationRequest) -> None:
        """Refuse now, holding nothing, if the request would not fit its studio's budget:
        lets the caller refuse before posting anything. `bind` still decides, atomically."""
        if request.channel_id in self._studios:
            need = estimate_mc(request)
            await self._db.run(lambda conn: self._admit(request.channel_id, conn, need))

    def bind(self, request: GenerationRequest) -> GenerationRequest:
        """Attach the studio's checks to a request, to run in the transaction that creates
        its job (the state and the budget there cannot change between check and write)."""
        if request.channel_id not in self._studios:
            return request
        return replace(request, admission=partial(self._admit, request.channel_id))

    def _admit(self, thread_id: int, conn: sqlite3.Connection, need_mc: int) -> None:
        """Runs on the database thread, inside the job-creating transaction."""
        row = conn.execute(
            "SELECT state, ends_at, budget_mc FROM studios WHERE thread_id = ?", (thread_id,)
        ).fetchone()
        if row is None:
            return
        state, ends_at, budget_mc = StudioState(row[0]), row[1], row[2]
        if state is StudioState.ENDED or ends_at <= self.clock():
            raise InvalidRequest(ENDED_TEXT)
        if state is StudioState.LOCKED:
            raise InvalidRequest(LOCKED_TEXT)
        if budget_mc is None:
            return
        spent = int(conn.execute(_SPENT_SQL, (thread_id,)).fetchone()[0])
        if spent + need_mc > budget_mc:
            left = max(0, budget_mc - spent)
            raise StudioBudgetExceeded(
                f"This image would go over this studio's budget of {_budget_text(budget_mc)}: "
                f"{_budget_text(left)} left, and it needs {_budget_text(need_mc)}."
            )

    async def spent_mc(self, thread_id: int) -> int:
        return int(await self._db.fetch_value(_SPENT_SQL, (thread_id,)))

    # ------------------------------------------------------------------ lifecycle
    async def plan(
        self,
        place: Requester,
        theme: str,
        required_words: str | None = None,
        hours: float = DEFAULT_HOURS,
        budget_credits: float | None = None,
    ) -> StudioPlan:
        """Validate a `/studio start` where it was asked. The starter must be allowed to make
        images there, and the theme passes the banned terms (it becomes part of every prompt:
        checking it once here spares members strikes for words they didn't write)."""
        plan = make_plan(theme, required_words, hours, budget_credits)
        if self._policy is not None:
            await self._policy.admit(place)
            await self._policy.check_prompt(place, " ".join((plan.theme, *plan.required_words)))
        return plan

    async def start(
        self,
        plan: StudioPlan,
        *,
        thread_id: int,
        guild_id: int,
        parent_channel_id: int,
        starter_id: int,
    ) -> Studio:
        now = self.clock()
        studio = Studio(
            thread_id=thread_id,
            guild_id=guild_id,
            parent_channel_id=parent_channel_id,
            starter_id=starter_id,
            theme=plan.theme,
            required_words=plan.required_words,
            ends_at=now + plan.hours * 3600,
            budget_mc=plan.budget_mc,
            state=StudioState.OPEN,
            created_at=now,
        )
        detail = f"<#{thread_id}> “{truncate(plan.theme, 200)}” until <t:{int(studio.ends_at)}:f>"
        if plan.required_words:
            detail += f" · required: {', '.join(plan.required_words)}"
        if plan.budget_mc is not None:
            detail += f" · budget {_budget_text(plan.budget_mc)}"
        entry = self._audit.entry(guild_id, starter_id, "studio started", detail)

        def insert(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO studios (thread_id, guild_id, parent_channel_id, starter_id, theme,"
                " required_words, ends_at, budget_mc, state, created_at)"
                " VALUES (?,?,?,?,?,?,?,?,?,?)",
                (
                    thread_id,
                    guild_id,
                    parent_channel_id,
                    starter_id,
                    studio.theme,
                    json.dumps(list(studio.required_words)),
                    studio.ends_at,
                    studio.budget_mc,
                    studio.state.value,
                    now,
                ),
            )
            AuditLog.write(conn, entry)

        await self._db.run(insert)
        self._studios[thread_id] = studio
        await self._audit.publish(entry)
        return studio

    async def lock(self, thread_id: int | None, actor_id: int, *, is_moderator: bool) -> Studio:
        """open → locked: no new requests, and the thread is locked in Discord."""
        studio = self._manageable(thread_id, actor_id, is_moderator=is_moderator, action="lock")
        if studio.state is StudioState.LOCKED:
            raise InvalidRequest(ALREADY_LOCKED_TEXT)
        entry = self._audit.entry(
            studio.guild_id, actor_id, "studio locked", f"<#{studio.thread_id}>"
        )
        changed = await self._set_state(studio, (StudioState.OPEN,), StudioState.LOCKED, entry)
        if changed is None:  # someone locked or ended it meanwhile
            raise InvalidRequest(self._manageable_again(studio.thread_id))
        await self._audit.publish(entry)
        if self.view is not None:
            try:
                await self.view.post(studio.thread_id, lock_notice(changed, actor_id), None)
                await self.view.lock_thread(changed)
            except Exception:  # requests are refused already; Discord's lock is a courtesy
                log.exception("could not lock the thread of studio %s", studio.thread_id)
        return changed

    def _manageable_again(self, thread_id: int) -> str:
        current = self.require(thread_id)
        if current.state is StudioState.LOCKED:
            return ALREADY_LOCKED_TEXT
        return ALREADY_ENDED_TEXT

    async def end(self, thread_id: int | None, actor_id: int, *, is_moderator: bool) -> Studio:
        """End a studio early (starter or moderator). Only marks it ended: `finish` posts the
        gallery and closes the thread (the caller answers the member first)."""
        studio = self._manageable(thread_id, actor_id, is_moderator=is_moderator, action="end")
        ended = await self._close(studio, actor_id, "ended early")
        if ended is None:
            raise InvalidRequest(ALREADY_ENDED_TEXT)
        return ended

    def _manageable(
        self, thread_id: int | None, actor_id: int, *, is_moderator: bool, action: str
    ) -> Studio:
        studio = self.require(thread_id)
        if not studio.may_manage(actor_id, is_moderator=is_moderator):
            raise InvalidRequest(NOT_ALLOWED_TEXT.format(action=action))
        if studio.state is StudioState.ENDED:
            raise InvalidRequest(ALREADY_ENDED_TEXT)
        return studio

    async def _close(self, studio: Studio, actor_id: int, reason: str) -> Studio | None:
        """→ ended, once (whoever gets here second, a command or the sweep, gets None)."""
        entry = self._audit.entry(
            studio.guild_id, actor_id, "studio ended", f"<#{studio.thread_id}> · {reason}"
        )
        ended = await self._set_state(
            studio, (StudioState.OPEN, StudioState.LOCKED), StudioState.ENDED, entry
        )
        if ended is not None:
            await self._audit.publish(entry)
        return ended

    async def _set_state(
        self,
        studio: Studio,
        from_states: tuple[StudioState, ...],
        to: StudioState,
        entry: AuditEntry,
    ) -> Studio | None:
        """A compare-and-set on the state, written with its audit entry."""
        marks = ",".join("?" for _ in from_states)

        def update(conn: sqlite3.Connection) -> sqlite3.Row | None:
            row: sqlite3.Row | None = conn.execute(
                f"UPDATE studios SET state = ? WHERE thread_id = ? AND state IN ({marks})"
                " RETURNING *",
                (to.value, studio.thread_id, *(s.value for s in from_states)),
            ).fetchone()
            if row is not None:
                AuditLog.write(conn, entry)
            return row

        row = await self._db.run(update)
        if row is None:
            return None
        changed = _from_row(row)
        self._studios[changed.thread_id] = changed
        return changed

    async def _record(
        self, studio: Studio, entry: AuditEntry | None = None, **fields: Any
    ) -> Studio:
        """Record an ending step done (with its audit entry, if any)."""
        if set(fields) - _UPDATABLE:
            raise ValueError(f"cannot set {sorted(set(fields) - _UPDATABLE)} on a studio")
        assignments = ", ".join(f"{name} = ?" for name in fields)

        def update(conn: sqlite3.Connection) -> None:
            conn.execute(
                f"UPDATE studios SET {assignments} WHERE thread_id = ?",
                (*fields.values(), studio.thread_id),
            )
            if entry is not None:
                AuditLog.write(conn, entry)

        await self._db.run(update)
        changed = replace(studio, **fields)
        self._studios[studio.thread_id] = changed
        if entry is not None:
            await self._audit.publish(entry)
        return changed

    # ------------------------------------------------------------------ the ending
    async def gallery(self, studio: Studio) -> list[GalleryItem]:
        """The images made in the thread that are still there, oldest first."""
        rows = await self._db.fetch_all(
            "SELECT id, user_id, prompt, result_message_id, parent_job_id FROM jobs"
            " WHERE channel_id = ? AND state = 'delivered' AND result_message_id IS NOT NULL"
            " ORDER BY created_at, rowid",
            (studio.thread_id,),
        )
        numbers: dict[str, int] = {}
        items = []
        for number, row in enumerate(rows, start=1):
            numbers[row["id"]] = number
            items.append(
                GalleryItem(
                    number=number,
                    job_id=row["id"],
                    user_id=row["user_id"],
                    prompt=studio.without_theme(row["prompt"]),
                    message_id=row["result_message_id"],
                    edit_of=numbers.get(row["parent_job_id"] or ""),
                )
            )
        return items

    async def finish(self, thread_id: int) -> bool:
        """Post the galleries of an ended studio and close its thread; True once all is done.
        Each step is recorded as it completes, so calling again (the next sweep, after a
        restart) resumes without posting anything twice. Never raises: a failure is logged
        and retried by the sweep."""
        studio = self._studios.get(thread_id)
        if studio is None or not studio.needs_finishing:
            return studio is not None and studio.finished_at is not None
        view = self.view
        if view is None or thread_id in self._finishing:
            return False
        self._finishing.add(thread_id)
        try:
            if await self._still_running(thread_id):
                return False  # `job_closed` (or the sweep) finishes it once they are done
            items = await self.gallery(studio)
            sheet: bytes | None = None
            if items and (
                studio.thread_gallery_message_id is None or studio.gallery_message_id is None
            ):
                sheet = await self._sheet(view, studio, items)
            if studio.thread_gallery_message_id is None:
                posted = await view.post(
                    studio.thread_id, gallery_text(studio, items, in_thread=True), sheet
                )
                studio = await self._record(studio, thread_gallery_message_id=posted or 0)
            if studio.gallery_message_id is None:
                posted = await view.post(
                    studio.parent_channel_id, gallery_text(studio, items, in_thread=False), sheet
                )
                entry = self._audit.entry(
                    studio.guild_id,
                    BOT_ACTOR,
                    "studio gallery",
                    f"<#{studio.thread_id}> · {len(items)} "
                    f"{'image' if len(items) == 1 else 'images'}",
                )
                studio = await self._record(studio, entry, gallery_message_id=posted or 0)
            await view.close_thread(studio)
            await self._record(studio, finished_at=self.clock())
            return True
        except Exception:
            log.exception("could not finish studio %s; will retry", thread_id)
            return False
        finally:
            self._finishing.discard(thread_id)

    async def running_jobs(self, thread_id: int) -> int:
        """Jobs of the thread that have not shown their outcome yet."""
        row = await self._db.fetch_one(
            "SELECT COUNT(*) AS n FROM jobs WHERE channel_id = ? AND closed = 0", (thread_id,)
        )
        return int(row["n"]) if row is not None else 0

    async def _still_running(self, thread_id: int) -> bool:
        """Whether the ending should still wait for the thread's jobs (bounded in time)."""
        if not await self.running_jobs(thread_id):
            self._draining_since.pop(thread_id, None)
            return False
        since = self._draining_since.setdefault(thread_id, self.clock())
        if self.clock() - since < self.drain_seconds:
            return True
        log.warning("studio %s: closing with jobs still running", thread_id)
        return False

    def job_closed(self, job: Job) -> None:
        """An engine listener: the last job of an ended studio lets its ending go on."""
        studio = self._studios.get(job.channel_id)
        if studio is None or not studio.needs_finishing:
            return
        task = asyncio.create_task(self.finish(studio.thread_id), name="studio-finish")
        self._tasks.add(task)  # keep a reference until it finishes
        task.add_done_callback(self._tasks.discard)

    async def _sheet(
        self, view: StudioView, studio: Studio, items: Sequence[GalleryItem]
    ) -> bytes | None:
        shown = items[:SHEET_MAX_IMAGES]
        images = [await view.read_image(studio, item.message_id) for item in shown]
        if not any(images):
            return None
        tiles = [(item.number, data) for item, data in zip(shown, images, strict=True)]
        return await asyncio.to_thread(contact_sheet, tiles)  # decoding is CPU work

    async def sweep(self) -> int:
        """End the studios whose time is up and finish interrupted endings; returns how many
        endings completed."""
        done = 0
        for studio in list(self._studios.values()):
            if studio.is_due(self.clock()):
                await self._close(studio, BOT_ACTOR, "time's up")
            current = self._studios[studio.thread_id]
            if current.needs_finishing and await self.finish(current.thread_id):
                done += 1
        return done

    async def run(self, ready: Callable[[], Awaitable[object]]) -> None:
        """The background sweep: once when the bot is ready (studios that ended while it was
        offline), then every `sweep_interval` seconds. Runs until cancelled."""
        await ready()
        await repeat(self.sweep, lambda: self.sweep_interval, what="studio sweep")
