"""Which BFL failures, and which requests, may go to the backup provider (FAILOVER=aiml)."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from bot.errors import (
    InsufficientCredits,
    ProviderAccessDenied,
    ProviderBusy,
    ProviderError,
    ProviderKeyRejected,
    ProviderRejected,
    ProviderUnavailable,
    SubmitOutcomeUnknown,
)
from bot.jobs.failover import plan_handover
from bot.jobs.models import Job
from bot.jobs.store import job_from_row
from bot.variants import ReferenceSize
from tests.conftest import make_request


def job_for(variant: str = "pro", **validate: object) -> Job:
    """A submitting BFL job, as read from the store."""
    request = make_request("a harbour", variant=variant, seed=0, **validate)
    row = {name: None for name in Job.__dataclass_fields__}
    row.update(
        id="0123456789abcdef", created_at=0.0, updated_at=0.0, channel_id=1, user_id=2,
        variant=variant, provider="bfl", params=json.dumps(request.params.to_json()),
        state="submitting",
        estimated_cost=3.0, closed=0, reference_count=0, parent_purged=0,
    )  # fmt: skip
    return job_from_row(row)


@pytest.mark.parametrize(
    ("exc", "reason"),
    [
        (InsufficientCredits("HTTP 402"), "no_credits"),
        (ProviderUnavailable("cannot connect"), "unavailable"),
        (SubmitOutcomeUnknown("HTTP 500"), None),
        (ProviderBusy("HTTP 429"), None),
        (ProviderRejected("bad width"), None),
        (ProviderAccessDenied("HTTP 403"), None),
        (ProviderKeyRejected("HTTP 401"), None),
    ],
)
def test_only_a_failure_that_certainly_made_nothing_hands_over(
    exc: ProviderError, reason: str | None
) -> None:
    handover = plan_handover(job_for(), exc, [])
    assert (handover.reason if handover else None) == reason


def test_the_request_keeps_its_size_seed_and_strictness() -> None:
    job = job_for(width=1024, height=768, options={"safety_tolerance": 0, "output_format": "png"})
    handover = plan_handover(job, InsufficientCredits(), [])
    assert handover is not None
    assert handover.variant.key == "pro-aiml"
    params = handover.params
    assert (params.width, params.height, params.seed) == (1024, 768, 1)  # the API wants ≥ 1
    assert params.options == {"safety_tolerance": 1, "output_format": "png"}
    assert handover.estimate == 3.15


@pytest.mark.parametrize(
    ("variant", "validate", "references"),
    [
        ("pro-preview", {}, []),  # previews are BFL's latest: they stay there
        ("klein-4b", {}, []),
        ("pro", {"width": 256, "height": 256}, []),  # below the AI/ML API's 512
        ("pro", {}, [ReferenceSize(512, 512)] * 4),  # the AI/ML API takes 3
        ("max", {}, [ReferenceSize(512, 512)]),  # no documented AI/ML max edit
    ],
)
def test_requests_the_backup_cannot_make_as_asked_stay_with_bfl(
    variant: str, validate: dict[str, object], references: list[ReferenceSize]
) -> None:
    assert plan_handover(job_for(variant, **validate), InsufficientCredits(), references) is None


def test_a_job_is_handed_over_once() -> None:
    moved = replace(job_for(), failover_from="pro")
    assert plan_handover(moved, InsufficientCredits(), []) is None
