"""A job's data and its states."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from enum import StrEnum

from bot.providers.base import InputImage
from bot.storage.db import Tx
from bot.variants import JobParams, Variant

# A check run in the job-creating transaction with the job's estimate in millicredits.
Admission = Callable[[Tx, int], Awaitable[None]]


class JobState(StrEnum):
    QUEUED = "queued"  # accepted, waiting for a provider slot
    SUBMITTING = "submitting"  # the submit request is in flight
    SUBMITTED = "submitted"  # the provider has the task; waiting for its result
    READY = "ready"  # the result is downloaded and stored, not yet posted
    DELIVERED = "delivered"
    FAILED = "failed"
    MODERATED = "moderated"
    CANCELLED = "cancelled"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL_STATES


TERMINAL_STATES = frozenset(
    {JobState.DELIVERED, JobState.FAILED, JobState.MODERATED, JobState.CANCELLED}
)


@dataclass(frozen=True)
class GenerationRequest:
    """A validated request from Discord, ready to become a job."""

    user_id: int
    guild_id: int | None
    channel_id: int
    variant: Variant
    params: JobParams
    inputs: list[InputImage] = field(default_factory=list)
    parent_job_id: str | None = None
    status_message_id: int | None = None
    role_ids: tuple[int, ...] = ()  # the requester's roles, for role allowances
    # A pre-chosen job id (an approved request uses its approval's), so that accepting the
    # same request again after a restart can be recognised instead of creating a second job.
    job_id: str | None = None
    # An extra check run inside the transaction that creates the job, before anything is
    # written, with the job's estimate in millicredits; raises InvalidRequest to refuse (a
    # studio thread's budget: see bot/community/studios/).
    admission: Admission | None = field(default=None, repr=False, compare=False)
    # Where the job is shown: the interaction that asked for it (its token, a credential), or
    # else the member's message it replies to. See cogs/delivery.py.
    interaction: InteractionToken | None = field(default=None, repr=False)
    reply_to_message_id: int | None = None


@dataclass(frozen=True)
class InteractionToken:
    """An interaction's webhook token and when Discord stops accepting it (Unix seconds)."""

    token: str = field(repr=False)
    expires_at: float

    def usable(self, now: float) -> bool:
        return now < self.expires_at


@dataclass(frozen=True)
class Job:
    id: str
    created_at: float
    updated_at: float
    guild_id: int | None
    channel_id: int
    user_id: int
    variant: str
    provider: str
    params: JobParams
    parent_job_id: str | None
    state: JobState
    status_message_id: int | None
    result_message_id: int | None
    provider_task_id: str | None
    polling_url: str | None
    provider_status: str | None
    estimated_cost: float
    cost: float | None
    result_seed: int | None
    result_width: int | None
    result_height: int | None
    error: str | None
    submitted_at: float | None
    ready_at: float | None
    finished_at: float | None
    closed: bool
    webhook_secret: str | None = field(default=None, repr=False)  # never in a log line
    reference_count: int = 0  # kept after the images themselves are purged
    interaction_token: str | None = field(default=None, repr=False)  # a credential: never logged
    interaction_expires_at: float | None = None
    reply_to_message_id: int | None = None
    owner: str | None = None  # the process lease running it (bot/jobs/leases.py)
    provider_key: str | None = None  # the key that submitted it, and keeps it
    slot: int | None = None  # its place among that key's active tasks
    # Privacy (bot/privacy): when its prompt was blanked (retention or the member's erasure),
    # and whether the job it was made from has been purged.
    prompt_removed_at: float | None = None
    parent_purged: bool = False
    # FAILOVER (bot/jobs/failover.py): the requester's roles ("1,2"), kept for their role
    # allowances; and, once another provider made it, the variant asked for and why.
    role_ids: str | None = None
    failover_from: str | None = None
    failover_reason: str | None = None

    @property
    def requested_variant(self) -> str:
        """The variant the member asked for (Reroll asks for it again)."""
        return self.failover_from or self.variant

    def interaction(self, now: float) -> InteractionToken | None:
        """The interaction this job is still shown through, while its token is valid."""
        if self.interaction_token is None or self.interaction_expires_at is None:
            return None
        token = InteractionToken(self.interaction_token, self.interaction_expires_at)
        return token if token.usable(now) else None

    @property
    def prompt(self) -> str:
        return self.params.prompt

    @property
    def prompt_removed(self) -> bool:
        return self.prompt_removed_at is not None
