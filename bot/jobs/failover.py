"""FAILOVER=aiml: a pro or max request BFL cannot take is made by the AI/ML API instead.

"Cannot take", and certainly did not start (bot/providers/http.py `post_at_most_once`):

* `no_credits`: BFL answered 402 (InsufficientCredits);
* `unavailable`: BFL could not be reached (every connect attempt failed), or every one of the
  client's attempts (BFL_SUBMIT_ATTEMPTS, backing off between them) was answered 503, which
  BFL sends before reading the request. That is what a "5xx storm" means here: a 500, 502
  or 504 may come after BFL created (and billed) the task, so it is SubmitOutcomeUnknown and
  never handed over, however many arrive.

Never on anything else: a moderation outcome (the task ran: handing it over would step around
the safety rules), a rejected request (400/422: the request is at fault, not BFL), a 403 or
401 (the key), a 429 (already a wait-and-retry in the queue), or any answer that leaves open
whether the task exists.

The job changes provider in one transaction (`JobStore.hand_over`): variant, provider,
options and estimate, and, when the backup's estimate is higher, the difference reserved
(or the request refused, changing nothing). It then waits in the AI/ML API's line, keeping
its turn, and is charged what that provider reports.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from bot.catalogue import get_variant
from bot.errors import InsufficientCredits, InvalidRequest, ProviderError, ProviderUnavailable
from bot.jobs.models import Job
from bot.ledger import format_credits
from bot.variants import JobParams, ReferenceSize, Variant

# The BFL variant → its backup. Previews stay on BFL: their point is BFL's latest model.
BACKUPS: Final = {"pro": "pro-aiml", "max": "max-aiml"}
BACKUP_PROVIDER: Final = "aiml"
BACKUP_NAME: Final = "AI/ML API"

NO_CREDITS: Final = "no_credits"
UNAVAILABLE: Final = "unavailable"
REFUSED: Final = "refused"  # the metric's reason when the member's allowance fell short
_BECAUSE: Final = {
    NO_CREDITS: "BFL's account is out of credits",
    UNAVAILABLE: "BFL could not be reached or was overloaded",
}


def reason_for(exc: ProviderError) -> str | None:
    """Why BFL could not take a submit that certainly did not start, or None when the job
    must not be handed over (see the module docstring)."""
    if isinstance(exc, InsufficientCredits):
        return NO_CREDITS
    if isinstance(exc, ProviderUnavailable):
        return UNAVAILABLE
    return None


@dataclass(frozen=True)
class Handover:
    """What the job becomes at the backup provider."""

    variant: Variant
    params: JobParams
    estimate: float
    reason: str


def plan_handover(job: Job, exc: ProviderError, references: list[ReferenceSize]) -> Handover | None:
    """The job as the backup provider's, or None when it stays BFL's: not a pro or max job,
    not a failure that allows it, or a request the backup cannot make as asked (more
    references than it takes, a size outside its limits): that one fails as it would have."""
    reason = reason_for(exc)
    backup_key = BACKUPS.get(job.variant)
    if reason is None or backup_key is None or job.failover_from is not None:
        return None
    backup = get_variant(backup_key)
    # The same request in the backup's terms: its options only, the member's moderation
    # strictness kept (BFL's 0, the strictest, is the backup's strictest, 1), the same size,
    # and a seed it accepts.
    names = {spec.name for spec in backup.options}
    options = {k: v for k, v in job.params.options.items() if k in names}
    if "safety_tolerance" in options:
        options["safety_tolerance"] = max(1, int(options["safety_tolerance"]))
    try:
        params = backup.validate(
            job.params.prompt,
            options=options,
            width=job.params.width,
            height=job.params.height,
            seed=max(job.params.seed, backup.min_seed),
            references=references,
        )
    except InvalidRequest:
        return None
    return Handover(backup, params, backup.estimate_cost(params, references), reason)


def failover_note(job: Job) -> str | None:
    """The line a result made by the backup provider carries, or None."""
    because = _BECAUSE.get(job.failover_reason or "")
    if job.failover_from is None or because is None:
        return None
    return f"Made by the backup provider ({BACKUP_NAME}) because {because}."


def refusal_text(reason: str, more_mc: int, refusal: InvalidRequest) -> str:
    """The failure shown when the member's allowance can't cover the backup's higher
    estimate."""
    return (
        f"{_BECAUSE[reason]}, and the backup provider ({BACKUP_NAME}) would need "
        f"{format_credits(more_mc)} more credits than were held for this request. "
        f"{refusal} Nothing was charged."
    )
