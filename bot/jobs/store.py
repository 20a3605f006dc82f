"""Jobs in the store. Every state change is a compare-and-set, so racing writers cannot both win.

The calls on a job's path (its state changes, its images, its record) wait through a
database outage (bot/storage/outage.py): a job whose image is made while the database is
down is stored and shown once it is back. Lookups for members and moderators answer at once.

Why this file is long: every read and write of a job is here, so the rules each must keep
(compare-and-set, the owner's fence, settling the ledger, patience) live in one place.
"""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import Awaitable, Callable, Collection
from typing import Any, TypeVar

from bot.errors import InvalidCharge
from bot.jobs.models import GenerationRequest, Job, JobState
from bot.ledger import Ledger, credits_to_mc
from bot.providers.base import InputImage, OutputImage
from bot.storage.base import INSERTION_ORDER
from bot.storage.db import Database, Row, Tx
from bot.storage.outage import DEFAULT_PATIENCE
from bot.storage.patient import Patient
from bot.storage.rows import from_row, marks
from bot.variants import JobParams, ReferenceSize, Variant

log = logging.getLogger(__name__)

Image = TypeVar("Image", InputImage, OutputImage)
T = TypeVar("T")

# Columns a transition may set besides `state`; anything else is a programming error.
_UPDATABLE = frozenset(
    {
        "status_message_id",
        "result_message_id",
        "provider_task_id",
        "polling_url",
        "provider_status",
        "cost",
        "result_seed",
        "result_width",
        "result_height",
        "error",
        "submitted_at",
        "webhook_secret",
        "ready_at",
        "finished_at",
        "closed",
        "interaction_token",
        "interaction_expires_at",
        "owner",
        "provider_key",
        "slot",
    }
)
# Where a job is shown: written by whichever process handles its interaction or message
# (the one on its server's shard), not only its owner, so `update` does not fence them.
_SHOWN_AT = frozenset(
    {"status_message_id", "result_message_id", "interaction_token", "interaction_expires_at"}
)
# While a job is in these states its task may be active at the provider, holding a slot.
_SLOT_STATES = frozenset({JobState.SUBMITTING, JobState.SUBMITTED})


# A check of the extra millicredits a job moved to another provider needs, in the moving
# transaction (a studio's budget: bot/community/studios/): (tx, channel id, millicredits).
MoreAdmission = Callable[[Tx, int, int], Awaitable[None]]


def new_job_id() -> str:
    return secrets.token_hex(8)


async def _nothing(tx: Tx, job: Job) -> None:
    return None


def job_from_row(row: Row) -> Job:
    return from_row(Job, row, params=_params, state=JobState, closed=bool, parent_purged=bool)


def _params(text: str) -> JobParams:
    return JobParams.from_json(json.loads(text))


# NOTIFY payload: the provider whose slots changed (bot/jobs/claims.py), or with " queued"
# after it (`queued_payload`), the provider of a newly queued job.
QUEUE_CHANNEL = "fluxcord_queue"
QUEUED = " queued"


def queued_payload(provider: str) -> str:
    return provider + QUEUED


# NOTIFY payload: the id of a job whose webhook another process received and recorded.
WEBHOOK_CHANNEL = "fluxcord_webhook"

# A member's requests not yet ended and shown, over every server and DMs.
_OPEN_COUNT_SQL = "SELECT COUNT(*) FROM jobs WHERE closed = 0 AND user_id = ?"
# A closed job's credentials: nothing may use them any more, so they are not kept.
_CREDENTIALS_ERASED = {"interaction_token": None, "webhook_secret": None}

# The job's slot before the UPDATE that returns it (PostgreSQL: see `_transition`).
_HELD_SLOT = ", (SELECT slot FROM jobs AS before WHERE before.id = jobs.id) AS held_slot"

# Settled when a job reaches these states: the image exists (and the provider billed it).
_CHARGED_STATES = frozenset({JobState.READY, JobState.DELIVERED})


class JobStore:
    """Jobs in the store. With a ledger, creating a job reserves its cost in the same
    transaction, and the transition that ends it settles the reservation in that one: the
    money and the job's state can never disagree, whatever crashes in between."""

    def __init__(
        self,
        db: Database,
        clock: Callable[[], float],
        *,
        ledger: Ledger | None = None,
        patience: float = DEFAULT_PATIENCE,
    ) -> None:
        self._db = db
        # The job's own path: waits through an outage rather than failing the job.
        self._job_db = Patient(db, patience=patience)
        self._clock = clock
        self._ledger = ledger
        # The process lease whose jobs this store may change (set by the engine). Every
        # change is then fenced: a job owned by another process is left alone, so a process
        # that comes back after its work was adopted cannot overwrite the new owner's.
        self.owner: str | None = None

    def _fence(self) -> tuple[str, tuple[str, ...]]:
        if self.owner is None:
            return "", ()
        return " AND (owner IS NULL OR owner = ?)", (self.owner,)

    async def create(
        self, request: GenerationRequest, *, estimated_cost: float, images: int = 1
    ) -> Job:
        """Persist a queued job; raises QuotaExceeded, or InvalidRequest from the request's
        `admission` check, writing nothing, if it does not fit."""
        job, _ = await self.create_then(
            request, estimated_cost=estimated_cost, images=images, then=_nothing
        )
        return job

    async def create_then(
        self,
        request: GenerationRequest,
        *,
        estimated_cost: float,
        images: int = 1,
        then: Callable[[Tx, Job], Awaitable[T]],
        tell_others: bool = True,
    ) -> tuple[Job, T]:
        """`create`, and `then(tx, job)` in the same transaction (e.g. the job's place in
        line, before any process can claim it). `tell_others=False`: no NOTIFY to the other
        processes, for a caller that claims it itself (or knows no slot is free)."""
        job_id = request.job_id or new_job_id()
        now = self._clock()
        interaction = request.interaction

        async def insert(tx: Tx) -> tuple[Job, T]:
            if request.admission is not None:
                await request.admission(tx, credits_to_mc(estimated_cost))
            if self._ledger is not None:
                await self._ledger.reserve(
                    tx,
                    job_id=job_id,
                    guild_id=request.guild_id,
                    user_id=request.user_id,
                    role_ids=request.role_ids,
                    variant=request.variant.key,
                    credits=estimated_cost,
                    images=images,
                    now=now,
                )
            row = await tx.fetch_one(
                "INSERT INTO jobs (id, created_at, updated_at, guild_id, channel_id, user_id,"
                " variant, provider, prompt, params, parent_job_id, state, status_message_id,"
                " estimated_cost, reference_count, interaction_token, interaction_expires_at,"
                " reply_to_message_id, role_ids) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)"
                " RETURNING *",
                (
                    job_id,
                    now,
                    now,
                    request.guild_id,
                    request.channel_id,
                    request.user_id,
                    request.variant.key,
                    request.variant.provider,
                    request.params.prompt,
                    json.dumps(request.params.to_json()),
                    request.parent_job_id,
                    JobState.QUEUED.value,
                    request.status_message_id,
                    estimated_cost,
                    len(request.inputs),
                    interaction.token if interaction else None,
                    interaction.expires_at if interaction else None,
                    request.reply_to_message_id,
                    ",".join(map(str, request.role_ids)) or None,
                ),
            )
            await tx.execute_many(
                "INSERT INTO job_inputs (job_id, position, content_type, width, height, data)"
                " VALUES (?,?,?,?,?,?)",
                [
                    (job_id, index, image.content_type, image.width, image.height, image.data)
                    for index, image in enumerate(request.inputs)
                ],
            )
            assert row is not None  # RETURNING gives the inserted row
            job = job_from_row(row)
            if tell_others:
                await tx.notify(QUEUE_CHANNEL, queued_payload(job.provider))
            return job, await then(tx, job)

        # The job comes back from its own transaction: once that commits, nothing else can
        # fail between "the job exists" and the caller knowing it.
        return await self._db.run(insert)

    async def get(self, job_id: str) -> Job | None:
        row = await self._db.fetch_one("SELECT * FROM jobs WHERE id = ?", (job_id,))
        return None if row is None else job_from_row(row)

    async def require(self, job_id: str) -> Job:
        """The job, waiting through an outage (the job's path needs it)."""
        job = await self.load(job_id)
        if job is None:
            raise KeyError(job_id)
        return job

    async def load(self, job_id: str) -> Job | None:
        """`get`, waiting through an outage."""
        row = await self._job_db.fetch_one("SELECT * FROM jobs WHERE id = ?", (job_id,))
        return None if row is None else job_from_row(row)

    async def owned_unfinished(self, owner: str) -> list[Job]:
        """`owner`'s jobs that have not ended and been shown (never queued ones: nobody owns
        those), oldest first."""
        rows = await self._db.fetch_all(
            "SELECT * FROM jobs WHERE owner = ? AND closed = 0 AND state <> 'queued'"
            f" ORDER BY created_at, {INSERTION_ORDER[self._db.backend]}",
            (owner,),
        )
        return [job_from_row(row) for row in rows]

    async def find_by_task(self, provider: str, task_id: str) -> Job | None:
        row = await self._db.fetch_one(
            "SELECT * FROM jobs WHERE provider = ? AND provider_task_id = ?", (provider, task_id)
        )
        return None if row is None else job_from_row(row)

    async def find_by_message(self, message_id: int) -> Job | None:
        """The job shown in this Discord message (its progress message or its result)."""
        row = await self._db.fetch_one(
            "SELECT * FROM jobs WHERE result_message_id = ? OR status_message_id = ?"
            " ORDER BY created_at DESC LIMIT 1",
            (message_id, message_id),
        )
        return None if row is None else job_from_row(row)

    async def recent_for_user(self, user_id: int, guild_id: int | None, limit: int) -> list[Job]:
        rows = await self._db.fetch_all(
            "SELECT * FROM jobs WHERE user_id = ? AND guild_id IS NOT DISTINCT FROM ?"
            " ORDER BY created_at DESC LIMIT ?",
            (user_id, guild_id, limit),
        )
        return [job_from_row(row) for row in rows]

    async def open_count_for_user(self, user_id: int) -> int:
        """The member's requests not yet ended and shown, over every server and DMs."""
        return int(await self._db.fetch_value(_OPEN_COUNT_SQL, (user_id,)))

    @staticmethod
    async def open_count_for_user_in(tx: Tx, user_id: int) -> int:
        """`open_count_for_user` inside a transaction."""
        return int(await tx.fetch_value(_OPEN_COUNT_SQL, (user_id,)))

    async def input_sizes(self, job_id: str) -> list[ReferenceSize]:
        """The sizes of a job's stored reference images, without reading the images."""
        rows = await self._db.fetch_all(
            "SELECT width, height FROM job_inputs WHERE job_id = ? ORDER BY position",
            (job_id,),
        )
        return [from_row(ReferenceSize, row) for row in rows]

    async def open_jobs(self) -> list[Job]:
        """Jobs whose requester has not yet been shown an outcome, oldest first."""
        rows = await self._db.fetch_all(
            "SELECT * FROM jobs WHERE closed = 0"
            f" ORDER BY created_at, {INSERTION_ORDER[self._db.backend]}"
        )
        return [job_from_row(row) for row in rows]

    async def inputs(self, job_id: str) -> list[InputImage]:
        return await self._images("job_inputs", InputImage, job_id)

    async def outputs(self, job_id: str) -> list[OutputImage]:
        return await self._images("job_outputs", OutputImage, job_id)

    async def _images(self, table: str, kind: type[Image], job_id: str) -> list[Image]:
        rows = await self._job_db.fetch_all(
            f"SELECT content_type, width, height, data FROM {table}"
            " WHERE job_id = ? ORDER BY position",
            (job_id,),
        )
        return [from_row(kind, row) for row in rows]

    async def transition(
        self, job_id: str, *, from_states: Collection[JobState], to: JobState, **fields: Any
    ) -> Job | None:
        """Move a job to `to` only if it is in one of `from_states`; returns the updated job,
        or None if it was elsewhere (someone else won the race)."""
        moved = await self._job_db.run(
            lambda tx: self._transition(tx, job_id, from_states, to, fields)
        )
        return moved if moved is not None else await self._landed(job_id, to, fields)

    async def hand_over(
        self,
        job: Job,
        variant: Variant,
        params: JobParams,
        *,
        estimated_cost: float,
        reason: str,
        admission: MoreAdmission | None = None,
    ) -> Job | None:
        """A submitting job its provider certainly did not start goes back in line as a job
        of `variant` (another provider's: FAILOVER, bot/jobs/failover.py), keeping its turn,
        its slot freed; with a ledger, its reservation moves to `variant`, raised to
        `estimated_cost` if that is more, in the same transaction. Returns the queued job
        (None: it was no longer this process's to move).

        Raises InvalidRequest (QuotaExceeded, BotBudgetSpent, or from `admission`, e.g. a
        studio's budget, asked first as at creation) when the difference does not fit;
        nothing is changed then."""
        fence, fence_params = self._fence()
        more = credits_to_mc(estimated_cost) - credits_to_mc(job.estimated_cost)

        async def move(tx: Tx) -> Job | None:
            # `failover_from = variant` reads the variant before this UPDATE (both engines).
            row = await tx.fetch_one(
                "UPDATE jobs SET state = ?, updated_at = ?, failover_from = variant,"
                " failover_reason = ?, variant = ?, provider = ?, params = ?,"
                " estimated_cost = ?, owner = NULL, provider_key = NULL, slot = NULL,"
                f" webhook_secret = NULL WHERE id = ? AND state = ?{fence} RETURNING *",
                (
                    JobState.QUEUED.value,
                    self._clock(),
                    reason,
                    variant.key,
                    variant.provider,
                    json.dumps(params.to_json()),
                    estimated_cost,
                    job.id,
                    JobState.SUBMITTING.value,
                    *fence_params,
                ),
            )
            if row is None:
                return None
            moved = job_from_row(row)
            if admission is not None and more > 0:
                await admission(tx, job.channel_id, more)
            if self._ledger is not None:
                await self._ledger.reserve_more(
                    tx,
                    job_id=job.id,
                    guild_id=job.guild_id,
                    user_id=job.user_id,
                    role_ids=[int(r) for r in (job.role_ids or "").split(",") if r],
                    variant=variant.key,
                    credits=estimated_cost,
                )
            await tx.notify(QUEUE_CHANNEL, job.provider)  # its slot there is free
            await tx.notify(QUEUE_CHANNEL, queued_payload(moved.provider))
            return moved

        return await self._job_db.run(move)

    async def _landed(self, job_id: str, to: JobState, fields: dict[str, Any]) -> Job | None:
        """The job if it already is where this change would have put it, by this very change:
        a COMMIT whose answer an outage swallowed, retried and found the job moved on. The
        fields written (timestamps among them) tell this change from anyone else's."""
        job = await self.load(job_id)
        if job is None or job.state is not to or (self.owner and job.owner != self.owner):
            return None
        if any(getattr(job, name) != value for name, value in fields.items()):
            return None
        log.info("job %s: its change to %s had landed before the database dropped", job_id, to)
        return job

    async def _transition(
        self,
        tx: Tx,
        job_id: str,
        from_states: Collection[JobState],
        to: JobState,
        fields: dict[str, Any],
        *,
        images: int | None = None,
    ) -> Job | None:
        unknown = set(fields) - _UPDATABLE
        if unknown:
            raise ValueError(f"cannot set {sorted(unknown)} on a job")
        if fields.get("closed"):
            fields = {**fields, **_CREDENTIALS_ERASED}  # the job has ended: its credentials go
        if to not in _SLOT_STATES:
            fields = {"slot": None, **fields}  # no longer at the provider
        if self.owner is not None and "owner" not in fields:
            fields = {**fields, "owner": self.owner}
        assignments = ["state = ?", "updated_at = ?", *(f"{name} = ?" for name in fields)]
        placeholders = marks(from_states)
        fence, fence_params = self._fence()
        now = self._clock()
        frees_slot = to not in _SLOT_STATES and not _SLOT_STATES.isdisjoint(from_states)
        # Whether it held a slot until now: PostgreSQL's RETURNING reads the table as the
        # statement found it, so other processes are woken only for a slot really freed (a
        # finished task's slot is usually handed on before its job is ready).
        held = _HELD_SLOT if frees_slot and tx.backend == "postgres" else ""
        rows = await tx.fetch_all(
            f"UPDATE jobs SET {', '.join(assignments)} WHERE id = ? AND state IN ({placeholders})"
            f"{fence} RETURNING *{held}",
            (
                to.value,
                now,
                *fields.values(),
                job_id,
                *(s.value for s in from_states),
                *fence_params,
            ),
        )
        if not rows:
            return None
        job = job_from_row(rows[0])
        if frees_slot and (not held or rows[0]["held_slot"] is not None):
            await tx.notify(QUEUE_CHANNEL, job.provider)
        await self._settle(tx, job, images, now)
        return job

    async def _settle(self, tx: Tx, job: Job, images: int | None, now: float) -> None:
        """Settle the job's reservation if this state change ended it for the ledger.

        Every path that ends a job passes here, inside its transaction. The ledger settles a
        job at most once, so later changes (ready → delivered, or ready → failed when the
        image cannot be posted) leave the first settlement standing: an image that exists
        was billed by the provider and stays charged even if Discord cannot show it.
        """
        if self._ledger is None:
            return
        if job.state in _CHARGED_STATES:
            # The provider's cost (from the poll, else the submit); None keeps the estimate.
            try:
                await self._ledger.charge(
                    tx,
                    job.id,
                    credits=job.cost,
                    images=images,
                    settled_by=job.state.value,
                    now=now,
                )
            except InvalidCharge as exc:
                # The image exists: it is still delivered, charged the estimate instead of
                # a figure the ledger cannot hold (the engine filters these out first).
                log.warning("job %s: %s; charging the estimate", job.id, exc)
                await self._ledger.charge(
                    tx, job.id, credits=None, images=images, settled_by=job.state.value, now=now
                )
        elif job.state.is_terminal:
            # Failed, moderated or cancelled before any image existed: nothing is charged,
            # even where the provider may have billed an unconfirmed submit.
            await self._ledger.refund(tx, job.id, settled_by=job.state.value, now=now)

    async def update(self, job_id: str, *, patient: bool = True, **fields: Any) -> Job:
        """Set informational fields without a state change (e.g. the provider's status text).
        `patient=False`: fail at once in an outage (for what only decorates the job)."""
        unknown = set(fields) - _UPDATABLE
        if unknown or not fields:
            raise ValueError(f"cannot set {sorted(unknown) or 'nothing'} on a job")
        assignments = ", ".join(f"{name} = ?" for name in fields)
        fence, fence_params = ("", ()) if set(fields) <= _SHOWN_AT else self._fence()
        rows = await (self._job_db if patient else self._db).run(
            lambda tx: tx.fetch_all(
                f"UPDATE jobs SET {assignments}, updated_at = ? WHERE id = ?{fence} RETURNING *",
                (*fields.values(), self._clock(), job_id, *fence_params),
            )
        )
        if not rows:
            raise KeyError(job_id)  # no such job, or another process's
        return job_from_row(rows[0])

    async def mark_ready(
        self,
        job_id: str,
        outputs: list[OutputImage],
        *,
        seed: int | None,
        cost: float | None,
    ) -> Job | None:
        """Store the downloaded images and move submitted → ready, atomically; returns the
        ready job (None: it was elsewhere)."""
        first = outputs[0]
        fields = {
            "ready_at": self._clock(),
            "result_seed": seed,
            "cost": cost,
            "result_width": first.width,
            "result_height": first.height,
        }

        async def store(tx: Tx) -> Job | None:
            won = await self._transition(
                tx, job_id, (JobState.SUBMITTED,), JobState.READY, fields, images=len(outputs)
            )
            if won is not None:
                await tx.execute_many(
                    "INSERT INTO job_outputs (job_id, position, content_type, width, height, data)"
                    " VALUES (?,?,?,?,?,?)",
                    [
                        (job_id, index, image.content_type, image.width, image.height, image.data)
                        for index, image in enumerate(outputs)
                    ],
                )
            return won

        return await self._job_db.run(store) or await self._landed(job_id, JobState.READY, fields)

    async def mark_delivered(self, job_id: str, message_id: int) -> Job | None:
        """ready → delivered and closed; the stored images are dropped (Discord has them now).
        Returns the delivered job (None: it was elsewhere)."""
        fields = {"result_message_id": message_id, "finished_at": self._clock(), "closed": 1}

        async def deliver(tx: Tx) -> Job | None:
            won = await self._transition(tx, job_id, (JobState.READY,), JobState.DELIVERED, fields)
            if won is not None:
                await tx.execute("DELETE FROM job_outputs WHERE job_id = ?", (job_id,))
            return won

        return await self._job_db.run(deliver) or await self._landed(
            job_id, JobState.DELIVERED, fields
        )

    async def open_counts(self, guild_id: int | None, user_id: int) -> tuple[int, int]:
        """(queued, running) jobs of a member in a server (running: at the provider, or
        finished but not posted yet)."""
        row = await self._db.fetch_one(
            "SELECT COUNT(*) FILTER (WHERE state = 'queued') AS queued,"
            " COUNT(*) FILTER (WHERE state IN ('submitting', 'submitted', 'ready')) AS running"
            " FROM jobs WHERE closed = 0 AND guild_id IS NOT DISTINCT FROM ? AND user_id = ?",
            (guild_id, user_id),
        )
        assert row is not None
        return row["queued"], row["running"]

    async def purge_inputs(self, finished_before: float) -> int:
        """Drop the stored reference images of jobs that ended before `finished_before`."""
        return await self._db.execute(
            "DELETE FROM job_inputs WHERE job_id IN"
            " (SELECT id FROM jobs WHERE closed = 1 AND finished_at < ?)",
            (finished_before,),
        )

    async def close(self, job_id: str) -> None:
        """The requester has been shown the outcome of a failed, moderated or cancelled job."""
        fence, fence_params = self._fence()
        await self._job_db.execute(
            "UPDATE jobs SET closed = 1, interaction_token = NULL, webhook_secret = NULL"
            f" WHERE id = ?{fence}",
            (job_id, *fence_params),
        )

    async def record_webhook(self, job_id: str, task_id: str, payload: str) -> None:
        """Keep a verified webhook's result for the job's owner (another process), and wake
        it. Only for a submitted job of that task: a late duplicate changes nothing."""

        async def record(tx: Tx) -> None:
            changed = await tx.execute(
                "UPDATE jobs SET webhook_payload = ? WHERE id = ? AND state = 'submitted'"
                " AND provider_task_id = ? AND webhook_payload IS NULL",
                (payload, job_id, task_id),
            )
            if changed:
                await tx.notify(WEBHOOK_CHANNEL, job_id)

        await self._db.run(record)

    async def recorded_webhooks(
        self, owner: str, job_ids: list[str] | None
    ) -> list[tuple[str, str, str]]:
        """(job id, task id, result) of recorded webhooks for `owner`'s submitted jobs."""
        sql = (
            "SELECT id, provider_task_id, webhook_payload FROM jobs WHERE closed = 0"
            " AND owner = ? AND state = 'submitted' AND webhook_payload IS NOT NULL"
        )
        params: list[Any] = [owner]
        if job_ids is not None:
            sql += f" AND id IN ({','.join('?' for _ in job_ids)})"
            params += job_ids
        rows = await self._db.fetch_all(sql, params)
        return [(row[0], row[1], row[2]) for row in rows]

    async def erase_expired_tokens(self, now: float) -> int:
        """Interaction tokens are credentials and useless after 15 minutes: drop them then."""
        return await self._db.execute(
            "UPDATE jobs SET interaction_token = NULL"
            " WHERE interaction_token IS NOT NULL AND interaction_expires_at <= ?",
            (now,),
        )
