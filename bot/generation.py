"""Turning what a member asked for into a job, and the questions cogs ask about jobs.

Every way of asking — slash commands, the context menu, a reply, a result button — ends up
here, so the rules (which variant, which references, what Reroll, Remix and Edit keep,
whether a request waits for a moderator, what a chain is, who may delete) are written once.
A request goes `precheck` (no download) → `prepare` (the prompt, the references) → `start`
(held for review, or a job); the shapes it takes on the way are in bot/drafts.py.

Why this file is long: every way of asking meets the server's rules here (variants, approvals,
studios, private results, images per prompt), and the rules that tie a request to what came
before it (Reroll, Remix, Edit, lineage) read best beside the path they shape; the parts that
stand alone (LoRAs, preferences, batches, result tools, publishing) live in their own modules.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from bot.community.policy import CommunityPolicy, Requester
from bot.community.publications import Publications
from bot.community.studios import Studios
from bot.drafts import Checked, Draft, Held, StoredReferences, Submitted, parse_seed, parse_size
from bot.errors import ButtonNotHere, InvalidRequest
from bot.jobs.batches import MAX_BATCH_IMAGES
from bot.jobs.engine import JobEngine
from bot.jobs.models import Admission, GenerationRequest, Job, JobState
from bot.jobs.store import JobStore
from bot.members.preferences import MemberPreferences, Preferences, apply_preferences, place_for
from bot.providers.base import InputImage
from bot.references import (
    ReferenceCandidate,
    ReferenceChecks,
    ReferenceLimits,
    precheck,
)
from bot.servers.audit import BOT_ACTOR, AuditLog
from bot.servers.loras import LoraCatalogue, lora_for_remix, resolve_lora, with_trigger
from bot.storage.db import Tx
from bot.text import code_excerpt, plural
from bot.variants import JobParams, ReferenceSize, Variant

if TYPE_CHECKING:
    from bot.community.approvals import ApprovalQueue
    from bot.community.direct import Acknowledge

log = logging.getLogger(__name__)

REFERENCES_PURGED_TEXT = (
    "This image's reference images are no longer kept, so it can't be rerolled or remixed "
    "with them. Use Edit on it, or start a new edit with the original images."
)
PROMPT_REMOVED_TEXT = (
    "This image's prompt is no longer kept, so it can't be rerolled. Use Remix to give it a "
    "new prompt, or Edit to change the image itself."
)
# The provider whose variants take `images` (one task per image).
BFL = "bfl"
# The chain view walks back at most this many steps (the most recent ones).
MAX_LINEAGE = 25
DEFAULT_MAX_IN_FLIGHT = 4
# Shows a held request (e.g. "waiting for a moderator") and returns that message's id.
MessageFor = Callable[[], Awaitable[int]]


class TooManyInFlight(InvalidRequest):
    """The member already has as many requests queued or running as one member may."""

    def __init__(self, limit: int) -> None:
        super().__init__(
            f"You already have {plural(limit, 'request')} queued or being "
            "made, the most one member can have at once. Wait for one to finish, then try again."
        )


class BatchTooLarge(InvalidRequest):
    """Several images count as that many requests, and they do not fit the in-flight cap."""

    def __init__(self, images: int, open_now: int, limit: int) -> None:
        waiting = f" and you already have {open_now} queued or being made" if open_now else ""
        super().__init__(
            f"{images} images count as {images} requests{waiting}; one member can have at most "
            f"{limit} at once. Ask for fewer images, or wait for one to finish."
        )


GRID_IMAGES_TEXT = "Ask for between 1 and {most} images."
GRID_PROVIDER_TEXT = (
    "Several images per prompt (images) work with the Black Forest Labs models; "
    "{label} has its own option for that."
)
# A grid's message holds a contact sheet and every image: which one to edit is not clear.
GRID_MESSAGE_TEXT = (
    "That message holds several images. Use its **Edit 1**…**Edit {count}** buttons to edit "
    "one of them."
)


class GenerationService:
    def __init__(
        self,
        engine: JobEngine,
        variants: Mapping[str, Variant],
        *,
        default_variant: str,
        limits: ReferenceLimits,
        policy: CommunityPolicy | None = None,
        audit: AuditLog | None = None,
        studios: Studios | None = None,
        provider_moderation_strikes: bool = False,
        reference_checks: ReferenceChecks | None = None,
        max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
        preferences: Preferences | None = None,
        tools: Mapping[str, Variant] | None = None,
    ) -> None:
        self.engine = engine
        self.variants = dict(variants)
        self.tools = dict(tools or {})  # asked for by result buttons, never offered by name
        self.default_variant = default_variant
        self.limits = limits
        self.policy = policy
        self.audit = audit
        self.studios = studios  # a studio thread's theme, required words and budget
        # A provider's safety refusal is a strike on the member's server (see strikes.py).
        self.provider_moderation_strikes = provider_moderation_strikes and policy is not None
        # Shared by every member's reference downloads and decodes (and one check per member).
        self.reference_checks = reference_checks or ReferenceChecks()
        self.max_in_flight = max_in_flight  # per member: queued or running jobs
        self.preferences = preferences  # members' /prefer defaults (bot/members)
        # Where held requests wait; attached by build_services (the queue submits through us).
        self.approvals: ApprovalQueue | None = None
        self.loras: LoraCatalogue | None = None  # servers' klein LoRAs (build_services)
        if audit is not None or self.provider_moderation_strikes:
            engine.on_job_closed(self._audit_provider_moderation)
        self._audit_tasks: set[asyncio.Task[None]] = set()

    @functools.cached_property
    def publications(self) -> Publications:
        """Private results made public, once (bot/community/publications.py)."""
        return Publications(self.engine.store, self.audit, self.policy)

    # ----------------------------------------------------------------- variants
    def edit_variants(self) -> dict[str, Variant]:
        return {key: v for key, v in self.variants.items() if v.edit_capable}

    def offered_name(self, variant: Variant) -> str:
        """The name a variant is offered under ("pro" for pro-aiml when that serves "pro")."""
        return next((key for key, v in self.variants.items() if v is variant), variant.key)

    def pick_variant(
        self,
        key: str | None,
        *,
        needs_edit: bool = False,
        server_default: str | None = None,
    ) -> Variant:
        pool = self.edit_variants() if needs_edit else self.variants
        if not pool:
            raise InvalidRequest("No image model is configured on this bot yet.")
        if key is None and server_default in pool:
            key = server_default  # a default that can't do the job falls back to the bot's
        if key is not None:
            # By the offered name, or by a stored job's own key (e.g. "pro-aiml" offered as "pro").
            own_key = next((v for v in self.variants.values() if v.key == key), None)
            variant = self.variants.get(key) or self.tools.get(key) or own_key
            if variant is None:
                raise InvalidRequest(f"There is no FLUX.2 variant called “{key}” on this bot.")
            if needs_edit and not variant.edit_capable:
                raise InvalidRequest(f"{variant.label} can't edit images.")
            return variant
        return pool.get(self.default_variant) or next(iter(pool.values()))

    # ----------------------------------------------------------------- requests
    def validate(
        self,
        draft: Draft,
        requester: Requester,
        preferences: MemberPreferences | None = None,
    ) -> tuple[Variant, JobParams]:
        """Everything that can be checked without downloading anything, server rules
        included (except the prompt's banned terms: see `precheck`), once the member's
        defaults have filled what the draft leaves out."""
        policy = self.policy
        stored = len(draft.stored.sizes) if draft.stored else 0
        needs_edit = draft.needs_edit or bool(draft.references or stored)
        applied = apply_preferences(draft, preferences, place_for(self, requester, needs_edit))
        draft = applied.draft
        variant = self.pick_variant(
            draft.variant,
            needs_edit=needs_edit,
            server_default=policy.default_variant(requester) if policy else None,
        )
        if policy is not None and not variant.tool:  # a tool is a button, not a model choice
            policy.check_variant(requester, self.offered_name(variant), variant)
        variant.check_reference_count(len(draft.references) + stored)
        check_images(draft.images, variant)
        prompt = draft.prompt
        if self.studios is not None:
            prompt = self.studios.apply(requester.channel_id, prompt, variant)
        lora = resolve_lora(self.loras, draft.lora, requester.guild_id, variant)
        prompt = with_trigger(prompt, lora)
        params = variant.validate(
            prompt,
            options=draft.options,
            width=draft.width,
            height=draft.height,
            size_preset=draft.size_preset,
            seed=draft.seed,
        )
        params = replace(params, lora=lora)
        if policy is not None:
            uploads = sum(1 for reference in draft.references if reference.uploaded)
            params = policy.shape(requester, variant, params, uploads=uploads)
        if applied.notes or applied.suffix_applied:
            params = replace(params, notes=applied.notes, suffix_applied=applied.suffix_applied)
        return variant, params

    def private_for(self, requester: Requester, *, member_prefers_private: bool) -> bool:
        """Whether this member's result is shown to them alone (with Publish: see
        bot/community/publications.py): the channel's setting or the member's own preference
        decides, except where results are public by nature (a studio thread, a request held
        for a moderator, which is shown in the channel), and in direct messages (private
        anyway)."""
        if requester.guild_id is None or self.review_channel(requester) is not None:
            return False
        if self.studios is not None and self.studios.get(requester.channel_id) is not None:
            return False
        in_channel = self.policy is not None and self.policy.results_private(requester)
        return in_channel or member_prefers_private

    async def private_result(self, requester: Requester) -> bool:
        """`private_for`, with the member's own /prefer default."""
        preferences = await self.preferences.get(requester.user_id) if self.preferences else None
        return self.private_for(
            requester, member_prefers_private=preferences is not None and preferences.private
        )

    def review_channel(self, requester: Requester) -> int | None:
        """The moderators' channel this member's requests wait in, or None: no approval."""
        if self.policy is None or not self.policy.needs_approval(requester):
            return None
        server = self.policy.server(requester)
        return server.approval_channel_id if server else None

    async def precheck(
        self, draft: Draft, requester: Requester, *, acknowledge: Acknowledge | None = None
    ) -> Checked:
        """Everything that needs no download and counts no strike, the member's allowance and
        the studio's budget included (estimated from what Discord says of the attachments):
        a refused request downloads nothing. Raises InvalidRequest. `acknowledge` answers the
        member's interaction before any slow check (a direct message's membership lookup)."""
        if self.policy is not None:
            await self.policy.admit(requester, acknowledge=acknowledge)
        await self.check_in_flight(requester.user_id, draft.images)
        preferences = await self.preferences.get(requester.user_id) if self.preferences else None
        variant, params = self.validate(draft, requester, preferences)
        for reference in draft.references:
            precheck(reference, self.limits)
        if draft.references:
            self.reference_checks.check_member_free(requester.user_id)
        # The references as their sizes alone (the estimate needs nothing else); a size
        # Discord did not report is counted by `prepare`, after the download.
        counted = _stored_sizes(draft) + tuple(
            ReferenceSize(reference.width, reference.height)
            for reference in draft.references
            if reference.width and reference.height
        )
        if draft.fit_input is not None:  # sent scaled to this size (see `prepare`)
            counted = (ReferenceSize(*draft.fit_input),)
        described = [InputImage("", size.width, size.height, b"") for size in counted]
        await self._check_budgets(self._request(draft, requester, variant, params, described))
        return Checked(draft, requester, variant, params, counted)

    async def prepare(self, checked: Checked) -> GenerationRequest:
        """After `precheck`: check the prompt, then download and verify the references, or
        load a stored job's. Raises InvalidRequest."""
        draft, requester = checked.draft, checked.requester
        if self.policy is not None:
            await self.policy.check_prompt(requester, checked.params.prompt)
        stored = await self._load_stored(draft.stored) if draft.stored else []
        downloaded = await self.reference_checks.load(
            draft.references, self.limits, member_id=requester.user_id
        )
        inputs = [*stored, *downloaded]
        if draft.fit_input is not None:
            inputs = [await self.reference_checks.fit(image, draft.fit_input) for image in inputs]
        request = self._request(draft, requester, checked.variant, checked.params, inputs)
        if tuple(ReferenceSize(image.width, image.height) for image in inputs) != checked.counted:
            await self._check_budgets(request)  # again, with the sizes Discord did not report
        return request

    async def start(
        self, request: GenerationRequest, requester: Requester, *, hold_in: MessageFor
    ) -> Held | Submitted:
        """A member's own request: held for a moderator where the server wants its requests
        reviewed, else accepted as a job (counted against the in-flight cap). `hold_in` is
        called only for a held request, before it is held: the adapter shows it there and
        returns that message's id, which the decision edits. Raises InvalidRequest, and then
        nothing is held or accepted."""
        review_channel = self.review_channel(requester)
        if review_channel is None:
            job, position = await self.submit(request, limit_in_flight=True)
            return Submitted(job, position)
        request = replace(request, private=False)  # a held request is shown in the channel
        assert self.approvals is not None, "the approval queue is attached by build_services"
        approval = await self.approvals.hold(
            request,
            variant_name=self.offered_name(request.variant),
            status_message_id=await hold_in(),
            review_channel_id=review_channel,
        )
        return Held(approval)

    def _request(
        self,
        draft: Draft,
        requester: Requester,
        variant: Variant,
        params: JobParams,
        inputs: list[InputImage],
    ) -> GenerationRequest:
        return GenerationRequest(
            user_id=requester.user_id,
            guild_id=requester.guild_id,
            channel_id=requester.channel_id,
            variant=variant,
            params=params,
            inputs=inputs,
            parent_job_id=draft.parent_job_id,
            role_ids=requester.role_ids,
            batch_size=draft.images,
        )

    async def _check_budgets(self, request: GenerationRequest) -> None:
        await self.engine.check_quota(request)  # refuse before anything is posted
        if self.studios is not None:
            await self.studios.precheck(request)

    async def check_in_flight(self, user_id: int, images: int = 1) -> None:
        """Refuse a member who already has `max_in_flight` requests queued or running, or
        whose `images` (each its own job) would take them past it."""
        check_in_flight(
            await self.engine.store.open_count_for_user(user_id), images, self.max_in_flight
        )

    def _in_flight_admission(self, user_id: int, images: int, then: Admission | None) -> Admission:
        """The in-flight cap, decided in the transaction that creates the job(s): requests
        sent at the same moment cannot all slip past the check in `precheck`."""
        limit = self.max_in_flight

        async def admit(tx: Tx, need_mc: int) -> None:
            await tx.lock(f"member:{user_id}")  # requests at the same moment count in turn
            check_in_flight(await JobStore.open_count_for_user_in(tx, user_id), images, limit)
            if then is not None:
                await then(tx, need_mc)

        return admit

    async def submit(
        self,
        request: GenerationRequest,
        *,
        status_message_id: int | None = None,
        limit_in_flight: bool = False,
    ) -> tuple[Job, int | None]:
        """Accept the request as a job: it goes to the scheduler at once, before anything is
        shown (the notifier posts its status beside it). Raises InvalidRequest, and then no
        job exists. `limit_in_flight`: a member's own request (not one a moderator approved)
        counts against the in-flight cap."""
        if self.policy is not None:  # also for approved requests: the owner may have blocked
            self.policy.check_blocked_everywhere(request.user_id)  # the member since
        if self.studios is not None:  # also for approved requests: the studio may have closed
            request = self.studios.bind(request)
        if limit_in_flight:
            request = replace(
                request,
                admission=self._in_flight_admission(
                    request.user_id, request.batch_size, request.admission
                ),
            )
        if status_message_id is not None:
            request = replace(request, status_message_id=status_message_id)
        job, position = await self.engine.accept(request)
        # From here on the job exists and runs: nothing may fail the request any more.
        action = "edit" if request.inputs else "generate"
        images = f" × {request.batch_size}" if request.batch_size > 1 else ""
        await self._record_best_effort(
            job, job.user_id, action, f"{request.variant.label}{images}: {_excerpt(job)}"
        )
        return job, position

    # ----------------------------------------------------------------- audit
    async def _record(self, job: Job, actor_id: int, action: str, detail: str) -> None:
        if self.audit is not None:
            await self.audit.record(
                job.guild_id, actor_id, action, detail, target_id=job.user_id, job_id=job.id
            )

    async def _record_best_effort(self, job: Job, actor_id: int, action: str, detail: str) -> None:
        """An audit line for something that already happened: losing it (the database busy
        or full) must not undo or misreport the job, so it is logged and let go."""
        try:
            await self._record(job, actor_id, action, detail)
        except Exception:
            log.exception("job %s: the audit record of %r could not be written", job.id, action)

    def _audit_provider_moderation(self, job: Job) -> None:
        if job.state is not JobState.MODERATED:
            return
        task = asyncio.create_task(self._provider_moderated(job))
        self._audit_tasks.add(task)  # keep a reference until it finishes
        task.add_done_callback(self._audit_tasks.discard)

    async def _provider_moderated(self, job: Job) -> None:
        detail = f"the image service's safety filter refused <@{job.user_id}>'s {_excerpt(job)}"
        try:
            await self._record(job, BOT_ACTOR, "provider moderation", detail)
            if self.provider_moderation_strikes and self.policy and job.guild_id is not None:
                if not await self._first_moderated_of_request(job):
                    return  # one request, one strike, however many of its images were refused
                moderation = self.policy.moderation
                await moderation.provider_moderation(job.guild_id, job.user_id, job.prompt)
        except Exception:
            log.exception("job %s: recording the provider's moderation failed", job.id)

    async def audits_written(self) -> None:
        """Wait for the audit lines and strikes of the jobs closed so far (written after the
        job is shown, so that showing it never waits for them)."""
        await asyncio.gather(*self._audit_tasks, return_exceptions=True)

    async def _first_moderated_of_request(self, job: Job) -> bool:
        """Whether `job` is the first image of its request the provider refused (a job on
        its own always is)."""
        if job.batch_id is None:
            return True
        batch = await self.engine.store.batch(job.batch_id)
        first = next((j for j in batch if j.state is JobState.MODERATED), job)
        return first.id == job.id

    # ----------------------------------------------------------------- jobs
    async def job(self, job_id: str) -> Job | None:
        return await self.engine.store.get(job_id)

    async def job_for_message(self, message_id: int) -> Job | None:
        """The job whose result (or progress) message this is, if it is one of ours."""
        return await self.engine.store.find_by_message(message_id)

    async def stored_references(self, job: Job) -> StoredReferences | None:
        """The job's reference images described (not loaded), to use them again (Reroll,
        Remix); None if it had none. Raises if they have been purged: silently dropping them
        would turn an edit into a new image."""
        if job.reference_count == 0:
            return None
        sizes = await self.engine.store.input_sizes(job.id)
        if len(sizes) < job.reference_count:
            raise InvalidRequest(REFERENCES_PURGED_TEXT)
        return StoredReferences(job.id, tuple(sizes))

    async def _load_stored(self, stored: StoredReferences) -> list[InputImage]:
        inputs = await self.engine.store.inputs(stored.job_id)
        if len(inputs) < len(stored.sizes):  # purged since the checks
            raise InvalidRequest(REFERENCES_PURGED_TEXT)
        return inputs

    @staticmethod
    def visible_to(job: Job, user_id: int, guild_id: int | None) -> bool:
        """Whether a member asking in `guild_id` (None: direct messages) may look a job up:
        a server's jobs in that server; a direct-message job only by its own requester."""
        if job.guild_id is None:
            return guild_id is None and job.user_id == user_id
        return job.guild_id == guild_id

    async def lineage(
        self, job: Job, *, viewer_id: int | None = None, guild_id: int | None = None
    ) -> list[Job]:
        """The chain from its first image to `job`, oldest first. With a viewer, it stops at
        a step that viewer may not see (`visible_to`)."""
        chain = [job]
        seen = {job.id}
        while chain[0].parent_job_id and len(chain) < MAX_LINEAGE:
            parent = await self.engine.store.get(chain[0].parent_job_id)
            if parent is None or parent.id in seen:
                break
            if viewer_id is not None and not self.visible_to(parent, viewer_id, guild_id):
                break
            seen.add(parent.id)
            chain.insert(0, parent)
        return chain

    async def history(self, user_id: int, guild_id: int | None, limit: int = 10) -> list[Job]:
        return await self.engine.store.recent_for_user(user_id, guild_id, limit)

    @staticmethod
    def may_manage(job: Job, user_id: int, *, is_moderator: bool) -> bool:
        """Who may delete a result or cancel a queued request: its requester or a moderator."""
        return is_moderator or job.user_id == user_id

    async def cancel(self, job: Job, actor_id: int) -> bool:
        """Cancel a request still waiting in line (refunded in full); False once it started.
        A grid's: each of its images still in line (those being made go on, and show)."""
        jobs = await self.engine.store.batch(job.batch_id) if job.batch_id else [job]
        cancelled = [one for one in jobs if await self.engine.cancel(one.id)]
        if cancelled:
            detail = _excerpt(job)
            if job.batch_id:
                detail += f", {plural(len(cancelled), 'image')} of {len(jobs)}"
            await self._record_best_effort(job, actor_id, "cancelled", detail)
        return bool(cancelled)

    async def reroll_draft(self, job: Job) -> Draft:
        """Same variant, prompt, options, size and references; a new seed. Raises
        InvalidRequest once the prompt has been removed (docs/privacy.md)."""
        if job.prompt_removed:
            raise InvalidRequest(PROMPT_REMOVED_TEXT)
        return Draft(
            prompt=job.params.prompt,
            use_preferences=False,  # the stored prompt is final (its suffix included)
            variant=job.requested_variant,  # BFL's again, if a backup made this one
            options=job.params.options,
            width=job.params.width,
            height=job.params.height,
            stored=await self.stored_references(job),
            parent_job_id=job.parent_job_id,
            lora=job.params.lora,
            images=job.batch_size,  # a grid's Reroll makes a new grid
        )

    async def remix_draft(
        self, job: Job, *, prompt: str, variant: str, size: str, seed: str
    ) -> Draft:
        """The Remix form's plain values over `job`: its references and parent, the options
        the chosen model understands (the rest fall back to its defaults). Raises
        InvalidRequest for a size or seed that can't be read, or purged references."""
        width, height = parse_size(size)
        chosen_seed = parse_seed(seed)
        stored = await self.stored_references(job)
        key = variant.strip().lower()
        chosen = self.variants.get(key)
        names = {spec.name for spec in chosen.options} if chosen else set()
        return Draft(
            prompt=prompt,
            use_preferences=False,  # the form shows the job's final prompt and choices
            variant=key,
            options={k: v for k, v in job.params.options.items() if k in names},
            width=width,
            height=height,
            seed=chosen_seed,
            stored=stored,
            parent_job_id=job.parent_job_id,
            lora=lora_for_remix(job.params.lora, chosen),  # kept where the model takes it
            images=job.batch_size if chosen and chosen.provider == BFL else 1,
        )

    def edit_draft(
        self, prompt: str, references: Sequence[ReferenceCandidate], parent: Job | None
    ) -> Draft:
        """An edit of a message's images; of one of our results (`parent`), it keeps that
        result's model if the model can edit, and records the result as its parent."""
        asked = parent.requested_variant if parent else None
        variant = self.variants.get(asked) if asked else None
        return Draft(
            prompt=prompt,
            variant=asked if variant and variant.edit_capable else None,
            references=references,
            parent_job_id=parent.id if parent else None,
            needs_edit=True,
        )

    async def shown_in(self, job_id: str, message_id: int, *, left_interaction: bool) -> None:
        """The job is now shown in this message. `left_interaction`: it moved to a channel
        message (the interaction's token expired or was refused), so the token is dropped."""
        fields: dict[str, Any] = {"status_message_id": message_id}
        if left_interaction:  # from now on its message is a plain channel message
            fields.update(interaction_token=None, interaction_expires_at=None)
        await self.engine.store.update(job_id, **fields)

    async def mark_deleted(self, job: Job, actor_id: int) -> None:
        """Its message is gone: chains and /history stop linking to it (nor to the other
        images of its grid, which were in the same message)."""
        batch = await self.engine.store.batch(job.batch_id) if job.batch_id else [job]
        for shown in batch:
            await self.engine.store.update(shown.id, result_message_id=None, status_message_id=None)
        await self._record_best_effort(
            job, actor_id, "deleted", f"<@{job.user_id}>'s {_excerpt(job)}"
        )


def check_images(images: int, variant: Variant) -> None:
    """`images` (several images per prompt) is 1–4, and more than 1 only on BFL, where each
    image is its own task (the AI/ML API's variants have their own `num_images`)."""
    if not 1 <= images <= MAX_BATCH_IMAGES:
        raise InvalidRequest(GRID_IMAGES_TEXT.format(most=MAX_BATCH_IMAGES))
    if images > 1 and variant.provider != BFL:
        raise InvalidRequest(GRID_PROVIDER_TEXT.format(label=variant.label))


def check_in_flight(open_now: int, images: int, limit: int) -> None:
    """A batch of `images` counts as that many requests against the member's cap."""
    if open_now >= limit:
        raise TooManyInFlight(limit)
    if open_now + images > limit:
        raise BatchTooLarge(images, open_now, limit)


def check_not_grid(job: Job | None) -> None:
    """A grid's message is never taken as an edit's references (its contact sheet is not an
    image of its own): the member is pointed at its per-image Edit buttons. Raises
    InvalidRequest."""
    if job is not None and job.in_batch:
        raise InvalidRequest(GRID_MESSAGE_TEXT.format(count=job.batch_size))


def _stored_sizes(draft: Draft) -> tuple[ReferenceSize, ...]:
    return draft.stored.sizes if draft.stored else ()


def _excerpt(job: Job, limit: int = 200) -> str:
    return f"image {code_excerpt(job.params.prompt, limit)} ({job.id})"


def check_button_place(
    job: Job, *, guild_id: int | None, channel_id: int | None, message_id: int | None
) -> None:
    """A result's button acts only where its job lives: its server, and its channel or its
    own message (a result posted elsewhere, e.g. in a thread's parent, keeps its buttons).
    A custom id copied into another server's or channel's message does nothing. Raises
    InvalidRequest (ButtonNotHere)."""
    if job.guild_id != guild_id:
        raise ButtonNotHere()
    own_message = message_id is not None and message_id in (
        job.result_message_id,
        job.status_message_id,
    )
    if job.channel_id != channel_id and not own_message:
        raise ButtonNotHere()
