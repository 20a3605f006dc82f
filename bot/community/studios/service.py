"""The studios service: applies a studio's rules to every request made in its thread, runs
its lifecycle (open → locked → ended), and its ending: waits for the thread's running jobs,
posts the galleries through the `StudioView` port and closes the thread. A sweep ends the
studios whose time is up, also those that ended while the bot was offline."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from functools import partial
from typing import Any, Protocol

from bot.community.policy import CommunityPolicy, Requester
from bot.community.studios.gallery import (
    SHEET_MAX_IMAGES,
    GalleryItem,
    contact_sheet,
    gallery_items,
)
from bot.community.studios.rules import (
    ALREADY_ENDED_TEXT,
    ALREADY_LOCKED_TEXT,
    DEFAULT_HOURS,
    NOT_A_STUDIO_TEXT,
    NOT_ALLOWED_TEXT,
    Studio,
    StudioPlan,
    StudioState,
    budget_text,
    check_budget,
    estimate_mc,
    make_plan,
    reply_is_request,
)
from bot.community.studios.store import StudioStore
from bot.errors import InvalidRequest
from bot.jobs.models import GenerationRequest, Job
from bot.periodic import repeat
from bot.servers.audit import BOT_ACTOR, AuditEntry, AuditLog
from bot.storage.db import Database, Tx
from bot.text import plural, truncate
from bot.variants import Variant

log = logging.getLogger(__name__)

# How often ended studios are looked for; the sweep also runs once right after startup.
SWEEP_SECONDS = 30.0
# An ended studio waits for the jobs still running in its thread before its gallery is
# posted and the thread archived; past this, it closes anyway (late results go to the parent).
DRAIN_SECONDS = 15 * 60.0


class StudioView(Protocol):
    """What the Discord layer does for a studio (see cogs/studio.py)."""

    async def read_image(self, studio: Studio, message_id: int) -> bytes | None:
        """The first image of a result message in the thread (None if it is gone)."""
        ...

    async def post_gallery(
        self, studio: Studio, items: Sequence[GalleryItem], sheet: bytes | None, *, in_thread: bool
    ) -> int | None:
        """Post the gallery (with the contact sheet, if any) in the thread or in its parent
        channel, without pinging anyone; the message's id, or None when the channel is gone
        or the bot may not post there."""
        ...

    async def lock_thread(self, studio: Studio, actor_id: int) -> None:
        """Say in the thread who locked the studio, then lock the thread."""
        ...

    async def close_thread(self, studio: Studio) -> None:
        """Archive and lock the thread (nothing if it is gone)."""
        ...


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
        self._store = StudioStore(db)
        self._db = db
        self._audit = audit
        self._policy = policy
        self.clock = clock  # tests move time forward through this
        self.sweep_interval = SWEEP_SECONDS
        self.view: StudioView | None = None
        self._studios: dict[int, Studio] = {}
        # With several processes each sweeps only the servers on its own shards.
        self.handles_guild: Callable[[int], bool] = lambda guild_id: True
        self._finishing: set[int] = set()  # endings in progress (a command and the sweep)
        self.drain_seconds = DRAIN_SECONDS
        # When this process first found each ended studio waiting for its jobs.
        self._draining_since: dict[int, float] = {}
        self._tasks: set[asyncio.Task[Any]] = set()

    async def load(self) -> None:
        # Ended studios stay known, so that a thread a moderator reopens still refuses requests.
        self._studios = {studio.thread_id: studio for studio in await self._store.all()}

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

    def reply_is_request(
        self, channel_id: int, *, mentioned: bool, has_words: bool, to_images: bool
    ) -> bool:
        """Whether a reply in `channel_id` asks for an image (see `rules.reply_is_request`)."""
        return reply_is_request(
            mentioned=mentioned,
            open_studio=self.accepts_replies(channel_id),
            has_words=has_words,
            to_images=to_images,
        )

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
        return studio.themed(prompt, variant)

    async def precheck(self, request: GenerationRequest) -> None:
        """Refuse now, holding nothing, if the request would not fit its studio's budget:
        lets the caller refuse before posting anything. `bind` still decides, atomically."""
        if request.channel_id in self._studios:
            need = estimate_mc(request)
            await self._db.run(lambda tx: self._admit(request.channel_id, tx, need))

    def bind(self, request: GenerationRequest) -> GenerationRequest:
        """Attach the studio's checks to a request, to run in the transaction that creates
        its job (the state and the budget there cannot change between check and write)."""
        if request.channel_id not in self._studios:
            return request
        return replace(request, admission=partial(self._admit, request.channel_id))

    async def _admit(self, thread_id: int, tx: Tx, need_mc: int) -> None:
        """Runs inside the job-creating transaction. The studio's lock makes two requests
        in one thread decide on the budget in turn (PostgreSQL runs them at once)."""
        await tx.lock(f"studio:{thread_id}")
        studio = await StudioStore.standing(tx, thread_id)
        if studio is None:
            return
        closed = studio.closed_text(self.clock())
        if closed is not None:
            raise InvalidRequest(closed)
        if studio.budget_mc is not None:
            check_budget(studio.budget_mc, await StudioStore.spent_in(tx, thread_id), need_mc)

    async def admit_more(self, tx: Tx, channel_id: int, more_mc: int) -> None:
        """A job already admitted in `channel_id` needs `more_mc` more (another provider
        makes it: bot/jobs/failover.py): raises StudioBudgetExceeded if a studio's budget
        there can't cover it. An ended studio does not refuse it: the job was admitted."""
        if channel_id not in self._studios:
            return
        await tx.lock(f"studio:{channel_id}")
        studio = await StudioStore.standing(tx, channel_id)
        if studio is not None and studio.budget_mc is not None:
            check_budget(studio.budget_mc, await StudioStore.spent_in(tx, channel_id), more_mc)

    async def spent_mc(self, thread_id: int) -> int:
        return await self._store.spent_mc(thread_id)

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
            detail += f" · budget {budget_text(plan.budget_mc)}"
        entry = self._audit.entry(guild_id, starter_id, "studio started", detail)
        await self._store.insert(studio, entry)
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
                await self.view.lock_thread(changed, actor_id)
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
        changed = await self._store.set_state(studio.thread_id, from_states, to, entry)
        if changed is not None:
            self._studios[changed.thread_id] = changed
        return changed

    async def _record(
        self, studio: Studio, entry: AuditEntry | None = None, **fields: Any
    ) -> Studio:
        """Record an ending step done (with its audit entry, if any)."""
        await self._store.record(studio.thread_id, entry, **fields)
        changed = replace(studio, **fields)
        self._studios[studio.thread_id] = changed
        if entry is not None:
            await self._audit.publish(entry)
        return changed

    # ------------------------------------------------------------------ the ending
    async def gallery(self, studio: Studio) -> list[GalleryItem]:
        """The images made in the thread that are still there, oldest first."""
        return gallery_items(await self._store.delivered(studio.thread_id), studio.without_theme)

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
                posted = await view.post_gallery(studio, items, sheet, in_thread=True)
                studio = await self._record(studio, thread_gallery_message_id=posted or 0)
            if studio.gallery_message_id is None:
                posted = await view.post_gallery(studio, items, sheet, in_thread=False)
                entry = self._audit.entry(
                    studio.guild_id,
                    BOT_ACTOR,
                    "studio gallery",
                    f"<#{studio.thread_id}> · {plural(len(items), 'image')}",
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
        return await self._store.running_jobs(thread_id)

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
        if not self.handles_guild(studio.guild_id):
            return  # the process with its shard finishes it, at its next sweep
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
            if not self.handles_guild(studio.guild_id):
                continue  # another process's shard: it ends this one (and posts the gallery)
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
