"""Where a job is shown, under Discord's rate limits.

A request that came as an interaction is answered, updated and finished through that
interaction's own token: the first answer (or the deferred "thinking" message) becomes the
job's message and every later change edits it through the interaction's webhook. Those
routes have a bucket per token and are exempt from the global 50 requests/s, while a channel
message costs one of 5 posts per 5 s in its channel, which one busy channel would exhaust.

A channel message is used only where there is no interaction (reply-to-edit, approved
requests) or when Discord no longer takes the token (15 minutes, or 401/404): then the job
posts in the channel, replying to its original message, and continues there. Channel posts
and edits wait for their turn in the channel (bot/outbox.py), so a status that had not been
posted yet when the result arrived is never posted at all.

Discord also limits webhook messages per channel, for everyone sending there (about 30 a
minute, a 429 with `X-RateLimit-Scope: shared`; cogs/shared_limit.py). For job messages such
a 429 is a reason to wait, never to give up: the channel is paused, its progress edits give
way, and final edits take turns, finals first; a token that expires meanwhile continues in
the channel.

A job's message is edited as little as tells the member what they need: its place in line,
"generating" once it has been at it 1.5 s (a fast result replaces "Queued" directly), a status
refresh at most every 5 s, and the result.

The provider never waits on any of this: a job is accepted first, and its messages follow.

Why this file is long: one notifier owns every way a job's message can be shown (through the
interaction, in the channel, moved out of a closed thread, under the shared limit, retried
smaller when Discord finds the file too large), and each fallback continues from the state the
others left in the job's JobMessage; split, every part would reach into the others.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import discord

from bot.errors import DeliveryImpossible
from bot.image_fit import CannotFit, fit_images, fits
from bot.jobs.models import Job, JobState
from bot.outbox import ChannelTurns, Gate, LatestUpdate, no_gate
from bot.providers.base import OutputImage
from bot.tools.contact_sheet import compose
from cogs.job_message import JobMessage, Shown, token_for
from cogs.posting import ChannelPoster
from cogs.render import (
    batch_failure_lines,
    batch_progress_text,
    failure_text,
    grid_embed,
    message_nonce,
    progress_text,
    result_embed,
)
from cogs.shared_limit import SharedLimited, SharedLimitWatch

if TYPE_CHECKING:
    from cogs.client import FluxcordBot

log = logging.getLogger(__name__)

# Progress edits of one message are spaced out; results and failures are not.
PROGRESS_INTERVAL = 1.0
# Once a job shows "generating", its status text and elapsed time are refreshed at most this
# often: the member already knows it is being made, and each edit is a request against the
# channel's limits and a message update for every client in it (a 1 s image went from 3.6
# edits of its message to 1).
STATUS_REFRESH_SECONDS = 5.0
# A job that started generating says so only once it has been at it this long: until then its
# message still says it is next in line, and a result that comes first replaces it directly.
GENERATING_GRACE_SECONDS = 1.5
# Jobs whose message state is kept in memory (finished ones are dropped at once).
MAX_TRACKED_JOBS = 20_000
# Discord counts the whole request against the upload limit: leave room for the JSON part.
UPLOAD_MARGIN = 64 * 1024
# After a 413 the result is fitted into half the budget, at most this many times.
TOO_LARGE_RETRIES = 2
# Discord: the thread is archived (50083) or locked (160005): post in its parent channel.
THREAD_CLOSED_CODES = frozenset({50083, 160005})
TOO_LARGE_CODE = 40005
# Discord: the user doesn't accept DMs from the bot (privacy settings, or blocked it).
CANNOT_DM_CODE = 50007
# Why a private result is not shown (in the member's failure text): never in the channel.
DMS_CLOSED_REASON = (
    "it is private, its request had expired, and your direct messages are closed to the bot "
    "(a private result is never posted in the channel)"
)
# Why a result that cannot be reduced enough is not posted (in the member's failure text).
TOO_LARGE_REASON = "it is larger than this server's upload limit, even reduced"

JobLookup = Callable[[str], Awaitable[Job | None]]
# (job, images in its result, the jobs of its grid whose images are shown: empty if none).
ResultViewFactory = Callable[[Job, int, Sequence[Job]], discord.ui.View]
QueuedViewFactory = Callable[[Job], discord.ui.View]
# (job id, message id, left_interaction): persist where the job is shown now.
ShownIn = Callable[[str, int, bool], Awaitable[None]]


def is_refused_token(exc: discord.HTTPException) -> bool:
    """Discord no longer takes this interaction's token (expired, unknown, or its message
    is gone): continue in the channel."""
    return exc.status in (401, 404)


class TooLarge(Exception):
    """Discord refused the files as larger than the destination's upload limit."""


class _GaveWay(Exception):
    """A progress update was not shown: its channel's shared budget goes to results."""


def refusal_reason(exc: discord.HTTPException) -> str | None:
    """Why Discord will never take this message, in words for the member; None when trying
    again later may work (5xx; 429s are waited out by discord.py)."""
    if exc.status == 403:
        return "the bot is not allowed to post there"
    if exc.status == 404:
        return "the channel is gone"
    if 400 <= exc.status < 500 and exc.status != 429:
        return f"Discord refused the message (error {exc.code or exc.status})"
    return None


class DiscordNotifier:
    """Implements bot.jobs.notifier.JobNotifier for Discord (see the module docstring)."""

    def __init__(
        self,
        client: discord.Client,
        *,
        lookup: JobLookup,
        shown_in: ShownIn,
        turns: ChannelTurns,
        result_view: ResultViewFactory | None = None,
        queued_view: QueuedViewFactory | None = None,
        progress_interval: float = PROGRESS_INTERVAL,
        clock: Callable[[], float] = time.time,
        lease_held: Callable[[], bool] = lambda: True,
        shared: SharedLimitWatch | None = None,
        on_progress_gave_way: Callable[[], None] = lambda: None,
    ) -> None:
        self._client = client
        # Discord's per-channel limit on webhook messages (the interaction routes).
        self._shared = shared or SharedLimitWatch()
        self._shared_turns = ChannelTurns()
        self._on_progress_gave_way = on_progress_gave_way
        # The database's clock (bot/storage/clock.py): interaction tokens expire by it.
        self._clock = clock
        self._lease_held = lease_held
        self._lookup = lookup
        self._shown_in = shown_in
        self._turns = turns
        self._result_view = result_view
        self._queued_view = queued_view
        self._progress_interval = progress_interval
        self._messages: OrderedDict[str, JobMessage] = OrderedDict()
        # Jobs whose outcome is shown: a progress report that arrives late must not undo it.
        self._done: OrderedDict[str, None] = OrderedDict()

    # ----------------------------------------------------------------- for the cogs
    def expect_interaction(
        self,
        job_id: str,
        interaction: discord.Interaction[Any],
        *,
        message_id: int | None = None,
        private: bool = False,
    ) -> None:
        """Before the job is accepted: show it through this interaction. `message_id`: the
        interaction was already answered (deferred) with this message. `private`: shown to
        the member alone (ephemeral; in their DMs once the token has expired)."""
        channel_id = interaction.channel_id or 0
        self._track(
            JobMessage(
                job_id,
                channel_id=channel_id,
                guild_id=interaction.guild_id,
                user_id=interaction.user.id,
                token=token_for(interaction, self._clock()),
                interaction=interaction,
                message_id=message_id,
                private=private,
            )
        )

    def forget(self, job_id: str) -> None:
        """The job was never accepted."""
        self._messages.pop(job_id, None)

    # ----------------------------------------------------------------- JobNotifier
    async def job_progress(self, job: Job, *, queue_position: int | None) -> None:
        if job.in_batch:  # its batch's message tells its progress (bot/jobs/batches.py)
            if job.id == job.batch_id:
                await self.batch_progress([job], queue_position=queue_position)
            return
        if job.id in self._done:
            return
        message = self._message(job)
        queued = job.state is JobState.QUEUED
        now = self._clock()
        if not queued:
            message.running = job
            shown_at = message.generating_shown_at
            if shown_at is not None and now - shown_at < STATUS_REFRESH_SECONDS:
                return
            message.generating_shown_at = now
            if shown_at is None and message.updates is not None:
                # Something (its place in line) already answers for the job. A fast model's
                # result often comes first, and then needs no edit before it.
                loop = asyncio.get_running_loop()
                loop.call_later(GENERATING_GRACE_SECONDS, self._show_running, message)
                return
        text = progress_text(job, queue_position, now=now)
        if text == message.progress_text:
            return  # the accept and the engine both report a new job: one edit is enough
        message.progress_text = text
        # While it waits in line the request can be cancelled; once running, it can't.
        view = self._queued_view(job) if queued and self._queued_view else None
        self._updates(message).show(Shown(text, view=view))

    def _show_running(self, message: JobMessage) -> None:
        job = message.running
        if job is None or job.id in self._done:
            return  # shown its result or failure meanwhile
        message.progress_text = progress_text(job, None, now=self._clock())
        self._updates(message).show(Shown(message.progress_text))

    async def job_delivered(self, job: Job, images: list[OutputImage]) -> int:
        parent = await self._lookup(job.parent_job_id) if job.parent_job_id else None
        budget = self._upload_limit(self._message(job)) - UPLOAD_MARGIN
        for _ in range(TOO_LARGE_RETRIES + 1):
            shown = await self._result(job, images, parent, budget)
            try:
                return await self._finish(job, shown)
            except TooLarge:
                # Our idea of the limit was too generous (the server lost its boost…).
                log.info("job %s: Discord says the result is too large; reducing it", job.id)
                budget //= 2
        raise DeliveryImpossible(TOO_LARGE_REASON)

    async def _result(
        self, job: Job, images: list[OutputImage], parent: Job | None, budget: int
    ) -> Shown:
        shown_images = images
        if not fits(images, budget):
            try:
                shown_images = await asyncio.to_thread(fit_images, images, budget)
            except CannotFit:
                raise DeliveryImpossible(TOO_LARGE_REASON) from None
        filenames = [
            f"flux-{job.id}-{i + 1}.{image.extension}" for i, image in enumerate(shown_images)
        ]
        embeds = [result_embed(job, images[0], filenames[0], parent)]
        if shown_images is not images:
            embeds[0].add_field(
                name="Shown", value="reduced to fit this server's upload limit", inline=False
            )
        # Further images of a multi-image result: one embed each, so all are shown together.
        embeds += [discord.Embed().set_image(url=f"attachment://{name}") for name in filenames[1:]]
        view = self._result_view(job, len(images), ()) if self._result_view else None
        return Shown(
            f"<@{job.user_id}>",
            embeds,
            shown_images,
            filenames,
            view,
            _requester_only(job),
            nonce=message_nonce(job),
        )

    # ----------------------------------------------------------------- batches
    async def batch_progress(self, jobs: list[Job], *, queue_position: int | None) -> None:
        """The batch's one message says how far it is (its first job's message)."""
        lead = jobs[0]
        if lead.id in self._done:
            return
        message = self._message(lead)
        text = batch_progress_text(jobs, queue_position)
        if text == message.progress_text:
            return
        message.progress_text = text
        # While any image waits in line the grid can be cancelled (those in line only).
        waiting = any(job.state is JobState.QUEUED for job in jobs)
        view = self._queued_view(lead) if waiting and self._queued_view else None
        self._updates(message).show(Shown(text, view=view))

    async def batch_delivered(
        self, jobs: list[Job], images: Mapping[str, list[OutputImage]]
    ) -> int:
        """The batch in its first job's message: the contact sheet, every image as a file,
        a line for each image that was not made, and one row of buttons per image."""
        lead = jobs[0]
        parent = await self._lookup(lead.parent_job_id) if lead.parent_job_id else None
        budget = self._upload_limit(self._message(lead)) - UPLOAD_MARGIN
        for _ in range(TOO_LARGE_RETRIES + 1):
            shown = await self._grid(jobs, images, parent, budget)
            try:
                return await self._finish(lead, shown)
            except TooLarge:
                log.info("batch %s: Discord says the result is too large; reducing it", lead.id)
                budget //= 2
        raise DeliveryImpossible(TOO_LARGE_REASON)

    async def _grid(
        self,
        jobs: list[Job],
        images: Mapping[str, list[OutputImage]],
        parent: Job | None,
        budget: int,
    ) -> Shown:
        lead = jobs[0]
        made = [job for job in jobs if images.get(job.id)]
        pictures = [images[job.id][0] for job in made]
        files = list(pictures)
        filenames = [
            f"flux-{job.id}-1.{image.extension}" for job, image in zip(made, pictures, strict=True)
        ]
        if len(pictures) > 1:  # composing decodes every image: not on the event loop
            labels = [job.batch_index + 1 for job in made]
            sheet = await asyncio.to_thread(compose, pictures, labels)
            files.insert(0, sheet)
            filenames.insert(0, f"flux-{lead.id}-grid.{sheet.extension}")
        shown_files = files
        if not fits(files, budget):
            try:
                shown_files = await asyncio.to_thread(fit_images, files, budget)
            except CannotFit:
                raise DeliveryImpossible(TOO_LARGE_REASON) from None
        # Filenames keep their job id; the extension follows a re-encoding.
        filenames = [
            f"{name.rsplit('.', 1)[0]}.{image.extension}"
            for name, image in zip(filenames, shown_files, strict=True)
        ]
        embeds = []
        if pictures:
            embed = grid_embed(jobs, pictures[0], filenames[0], parent)
            if shown_files is not files:
                embed.add_field(
                    name="Shown", value="reduced to fit this server's upload limit", inline=False
                )
            embeds.append(embed)
        content = "\n".join([f"<@{lead.user_id}>", *batch_failure_lines(jobs)])
        view = self._result_view(lead, 1, made) if self._result_view and made else None
        return Shown(
            content,
            embeds,
            shown_files,
            filenames,
            view,
            _requester_only(lead),
            nonce=message_nonce(lead),
        )

    def _upload_limit(self, message: JobMessage) -> int:
        if message.upload_limit is not None:
            return message.upload_limit
        guild = self._client.get_guild(message.guild_id) if message.guild_id else None
        return (
            guild.filesize_limit
            if guild is not None
            else discord.utils.DEFAULT_FILE_SIZE_LIMIT_BYTES
        )

    async def job_failed(self, job: Job) -> None:
        shown = Shown(failure_text(job), mentions=_requester_only(job), nonce=message_nonce(job))
        await self._finish(job, shown)

    # ----------------------------------------------------------------- internals
    async def _finish(self, job: Job, shown: Shown) -> int:
        message = self._message(job)
        message_id = await self._updates(message).finish(shown)
        self._messages.pop(job.id, None)  # its story is told; a re-delivery starts afresh
        self._done[job.id] = None
        while len(self._done) > MAX_TRACKED_JOBS:
            self._done.popitem(last=False)
        return message_id

    def _track(self, message: JobMessage) -> JobMessage:
        self._messages[message.job_id] = message
        while len(self._messages) > MAX_TRACKED_JOBS:
            self._messages.popitem(last=False)
        return message

    def _message(self, job: Job) -> JobMessage:
        message = self._messages.get(job.id)
        return message if message is not None else self._track(JobMessage.of(job, self._clock()))

    def _updates(self, message: JobMessage) -> LatestUpdate[Shown, int]:
        if message.updates is None:

            async def apply(shown: Shown, final: bool) -> int:
                if not final and message.private and not message.uses_interaction(self._clock()):
                    return message.message_id or 0  # a private job's DM shows its outcome only
                if not final and not self._lease_held() and not _unanswered(message):
                    # This process's lease may have run out (it was paused, or cut off from
                    # the database): another process may own the job now and have shown
                    # more of it, even its result, which progress from before must not undo.
                    log.debug("job %s: not showing progress without a lease", message.job_id)
                    return message.message_id or 0
                try:
                    return await self._apply(message, shown, final=final)
                except _GaveWay:
                    self._on_progress_gave_way()
                    return message.message_id or 0

            def gate() -> Gate:
                if message.uses_interaction(self._clock()):
                    return no_gate
                turns = self._turns[message.channel_id]
                return lambda urgent: turns.turn(message.job_id, urgent=urgent)

            updates: LatestUpdate[Shown, int] = LatestUpdate(
                apply, gate=gate, progress_interval=self._progress_interval
            )
            updates.on_final = lambda: self._turns[message.channel_id].hurry(message.job_id)
            message.updates = updates
        return message.updates

    async def _apply(self, message: JobMessage, shown: Shown, *, final: bool = True) -> int:
        """Show it where the job is, moving to the parent channel if its thread was closed;
        raises DeliveryImpossible (never will work), TooLarge, _GaveWay (progress only), or a
        transient error."""
        try:
            try:
                return await self._apply_here(message, shown, final=final)
            except discord.HTTPException as exc:
                if exc.code not in THREAD_CLOSED_CODES or message.moved_from_thread:
                    raise
            parent_id = await self._parent_of(message.channel_id)
            if parent_id is None:
                raise DeliveryImpossible("its thread is closed")
            log.info("job %s: its thread is closed; posting in the parent", message.job_id)
            message.move_to_parent(parent_id)
            async with self._turns[parent_id].turn(message.job_id, urgent=True):
                return await self._in_channel(message, shown)
        except discord.HTTPException as exc:
            if exc.status == 413 or exc.code == TOO_LARGE_CODE:
                raise TooLarge() from None
            reason = refusal_reason(exc)
            if reason is None:
                raise
            raise DeliveryImpossible(reason) from None

    async def _parent_of(self, channel_id: int) -> int | None:
        channel = self._client.get_channel(channel_id)
        if channel is None:
            try:
                channel = await self._client.fetch_channel(channel_id)
            except discord.HTTPException:
                return None
        return channel.parent_id if isinstance(channel, discord.Thread) else None

    async def _apply_here(self, message: JobMessage, shown: Shown, *, final: bool = True) -> int:
        now = self._clock()
        if message.uses_interaction(now) and message.message_id is None and not message.interaction:
            # Answered before a restart, but its message was never recorded: use the channel.
            message.leave_interaction()
        if message.uses_interaction(now):
            try:
                shown_id = await self._within_shared_limit(message, shown, final=final)
                if shown_id is not None:
                    return shown_id
                log.info(
                    "job %s: its token expired while the channel was limited; continuing in "
                    "the channel",
                    message.job_id,
                )
                message.leave_interaction()
            except discord.HTTPException as exc:
                if not is_refused_token(exc):
                    raise
                log.info(
                    "job %s: the interaction is gone; continuing in the channel", message.job_id
                )
                message.leave_interaction()
            if message.private and not final:
                return 0  # a private job's DM shows its outcome only
            # Not gated by the channel's turns yet: take a turn now.
            async with self._turns[message.channel_id].turn(message.job_id, urgent=True):
                return await self._in_channel(message, shown)
        return await self._in_channel(message, shown)

    async def _within_shared_limit(
        self, message: JobMessage, shown: Shown, *, final: bool
    ) -> int | None:
        """Show it through the interaction, under the channel's shared limit: progress gives
        way (_GaveWay) while the channel is limited or was lately; a final update waits for
        its turn and the channel's pause as long as it takes. None: the token expired
        meanwhile."""
        channel_id = message.channel_id
        limits = self._shared.limits
        if _unanswered(message):
            # The first answer is a callback: not a webhook message, and owed within 3 s.
            return await self._through_interaction(message, shown)
        if not limits.hot(channel_id):
            try:
                with self._shared.handling(channel_id):
                    return await self._through_interaction(message, shown)
            except SharedLimited:
                log.info("job %s: Discord's shared limit for its channel", message.job_id)
        while True:
            if not final:
                raise _GaveWay()
            # One at a time in a limited channel (finals first): the next 429 pauses it again
            # without a crowd of requests meeting it.
            async with self._shared_turns[channel_id].turn(message.job_id, urgent=True):
                await limits.wait(channel_id)
                if not message.uses_interaction(self._clock()):
                    return None
                try:
                    with self._shared.handling(channel_id):
                        return await self._through_interaction(message, shown)
                except SharedLimited:
                    continue

    async def _through_interaction(self, message: JobMessage, shown: Shown) -> int:
        interaction = message.interaction
        if interaction is not None and not interaction.response.is_done():
            # The first answer: its message (the interaction's @original) is the job's.
            kwargs: dict[str, Any] = {"allowed_mentions": shown.mentions}
            if message.private:
                kwargs["ephemeral"] = True
            if shown.embeds:
                kwargs["embeds"] = shown.embeds
            if shown.images:
                kwargs["files"] = shown.files()
            if shown.view is not None:
                kwargs["view"] = shown.view
            response = await interaction.response.send_message(shown.content, **kwargs)
            message_id = response.message_id
            if message_id is None:
                message_id = (await interaction.original_response()).id
            await self._record(message, message_id)
            return message_id
        assert message.token is not None
        if message.message_id is None:
            assert interaction is not None  # see _apply
            edited = await interaction.edit_original_response(
                content=shown.content,
                embeds=shown.embeds,
                attachments=shown.files(),
                view=shown.view,
                allowed_mentions=shown.mentions,
            )
            await self._record(message, edited.id)
            return edited.id
        application_id = self._client.application_id
        assert application_id is not None
        webhook = discord.Webhook.partial(application_id, message.token.token, client=self._client)
        edited_message = await webhook.edit_message(
            message.message_id,
            content=shown.content,
            embeds=shown.embeds,
            attachments=shown.files(),
            view=shown.view,
            allowed_mentions=shown.mentions,
        )
        return edited_message.id

    async def _in_channel(self, message: JobMessage, shown: Shown) -> int:
        if message.private:
            return await self._in_dm(message, shown)  # never in the channel while private
        if message.moved_from_thread is not None:
            note = f"-# Posted here: <#{message.moved_from_thread}> is closed."
            shown = replace(shown, content=f"{shown.content}\n{note}")
        channel = self._client.get_partial_messageable(
            message.channel_id, guild_id=message.guild_id
        )
        if message.message_id is not None:
            try:
                edited = await channel.get_partial_message(message.message_id).edit(
                    content=shown.content,
                    embeds=shown.embeds,
                    attachments=shown.files(),
                    allowed_mentions=shown.mentions,
                    view=shown.view,
                )
                assert edited is not None
                return edited.id
            except discord.NotFound:
                log.info("job %s: its message is gone; posting a new one", message.job_id)
                message.message_id = None
        reference = None
        if message.reply_to is not None:
            reference = discord.MessageReference(
                message_id=message.reply_to,
                channel_id=message.channel_id,
                guild_id=message.guild_id,
                fail_if_not_exists=False,
            )
        sent = await channel.send(
            content=shown.content,
            embeds=shown.embeds,
            files=shown.files(),
            allowed_mentions=shown.mentions,
            reference=reference,  # type: ignore[arg-type]
            nonce=shown.nonce,  # type: ignore[arg-type]
            view=shown.view,  # type: ignore[arg-type]
        )
        await self._record(message, sent.id)
        return sent.id

    async def _in_dm(self, message: JobMessage, shown: Shown) -> int:
        """A private job whose interaction is gone: its outcome goes to the member's DMs, with
        the buttons that work there. Raises DeliveryImpossible when their DMs are closed."""
        note = (
            f"-# Your private result from <#{message.channel_id}>: its request had expired, "
            "so it came here."
        )
        view = _dm_view(shown.view)
        try:
            dm = await self._client.create_dm(discord.Object(message.user_id))
            if message.message_id is not None:  # shown here before a restart: update it
                try:
                    edited = await dm.get_partial_message(message.message_id).edit(
                        content=f"{shown.content}\n{note}",
                        embeds=shown.embeds,
                        attachments=shown.files(),
                        view=view,
                    )
                    return edited.id
                except discord.NotFound:
                    message.message_id = None
            sent = await dm.send(
                content=f"{shown.content}\n{note}",
                embeds=shown.embeds,
                files=shown.files(),
                nonce=shown.nonce,  # type: ignore[arg-type]
                view=view,  # type: ignore[arg-type]
            )
        except discord.Forbidden as exc:
            if exc.code != CANNOT_DM_CODE:
                raise
            log.warning(
                "job %s: private result not delivered: the member's DMs are closed",
                message.job_id,
            )
            raise DeliveryImpossible(DMS_CLOSED_REASON) from None
        await self._record(message, sent.id)
        return sent.id

    async def post_published(self, job: Job, images: list[OutputImage]) -> int:
        """A private result, published (bot/community/publications.py): posted in its
        channel, in the channel's turn, with the buttons of a public result. Returns the
        message's id."""
        public = replace(job, private=False)  # its buttons: a public result's
        parent = await self._lookup(job.parent_job_id) if job.parent_job_id else None
        budget = self._upload_limit(JobMessage.from_job(job)) - UPLOAD_MARGIN
        shown = await self._result(public, images, parent, budget)
        channel = self._client.get_partial_messageable(job.channel_id, guild_id=job.guild_id)
        async with self._turns[job.channel_id].turn(("publish", job.id), urgent=True):
            sent = await channel.send(
                content=shown.content,
                embeds=shown.embeds,
                files=shown.files(),
                allowed_mentions=discord.AllowedMentions.none(),
                nonce=shown.nonce,  # type: ignore[arg-type]
                view=shown.view,  # type: ignore[arg-type]
            )
        return sent.id

    async def _record(self, message: JobMessage, message_id: int) -> None:
        message.message_id = message_id
        try:
            await self._shown_in(message.job_id, message_id, message.left_interaction)
        except Exception:  # the message is up; a restart will at worst post a second one
            log.exception("job %s: could not record its message", message.job_id)


def _unanswered(message: JobMessage) -> bool:
    """The job's interaction still waits for its first answer (always given: Discord
    shows the member an error otherwise)."""
    interaction = message.interaction
    return interaction is not None and not interaction.response.is_done()


def _dm_view(view: discord.ui.View | None) -> discord.ui.View | None:
    """The buttons of a result that work in DMs (those marked `works_in_dms`: the others act
    only in the job's server)."""
    if view is None:
        return None
    kept = [item for item in view.children if getattr(item, "works_in_dms", False)]
    if not kept:
        return None
    dm_view = discord.ui.View(timeout=None)
    for item in kept:
        dm_view.add_item(item)
    return dm_view


def _requester_only(job: Job) -> discord.AllowedMentions:
    # Only the requester may be pinged, whatever the prompt says.
    return discord.AllowedMentions(everyone=False, roles=False, users=[discord.Object(job.user_id)])


def attach_delivery(
    bot: FluxcordBot, *, result_view: ResultViewFactory, queued_view: QueuedViewFactory
) -> None:
    """Give the core its Discord notifier, and the cogs their poster for side posts. Both
    share one queue of senders per channel. Called from the results cog's `cog_load`."""
    services = bot.services
    turns = ChannelTurns()
    bot.poster = ChannelPoster(bot, turns)
    bot.shared_limits.on_limited = services.metrics.shared_limit_met
    bot.notifier = DiscordNotifier(
        bot,
        lookup=services.engine.store.load,  # waits through a database outage
        shown_in=lambda job_id, message_id, left: services.generation.shown_in(
            job_id, message_id, left_interaction=left
        ),
        turns=turns,
        result_view=result_view,
        queued_view=queued_view,
        clock=services.clock,
        lease_held=lambda: services.engine.lease.surely_held,
        shared=bot.shared_limits,
        on_progress_gave_way=services.metrics.progress_gave_way,
    )
    services.engine.notifier = bot.notifier
