"""FAILOVER=aiml through the engine: BFL (stand-in) cannot take a pro or max request, and
certainly did not start it, so the AI/ML API (stand-in) makes it, charged what it reports;
and every case where it must not happen."""

from __future__ import annotations

import dataclasses
import io
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import contextmanager

import pytest
from PIL import Image

from bot.errors import InsufficientCredits, ProviderRejected, SubmitOutcomeUnknown
from bot.jobs.engine import MODERATED_MESSAGE, JobEngine
from bot.jobs.failover import failover_note
from bot.jobs.models import GenerationRequest, Job, JobState
from bot.ledger import Metric, Period, Scope
from bot.providers.aiml import AIMLClient
from bot.providers.base import InputImage
from bot.providers.bfl import BFLClient
from bot.storage.db import Database
from tests.conftest import BFL_KEY, FAST_POLLING, make_request
from tests.fakes.aiml_server import FakeAIML
from tests.fakes.bfl_server import FakeBFL, Outcome, SubmitFault
from tests.fakes.notifier import RecordingNotifier

AIML_KEY = "test-aiml-key"
GUILD = 42  # make_request's guild
MOD = 9

Build = Callable[..., Awaitable[JobEngine]]


@pytest.fixture
async def aiml() -> AsyncIterator[FakeAIML]:
    async with FakeAIML(api_key=AIML_KEY, latency=0.02) as fake:
        fake.usd_spent = True  # newer answers carry dollars: the ledger charges those
        yield fake


@contextmanager
def closed_port() -> Iterator[int]:
    """A port on 127.0.0.1 that refuses connections (bound, never listening)."""
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        yield held.getsockname()[1]


@pytest.fixture
async def build(
    db: Database, fake_bfl: FakeBFL, aiml: FakeAIML, notifier: RecordingNotifier
) -> AsyncIterator[Build]:
    """An engine with both providers; `failover` as FAILOVER=aiml, `bfl_url` to move BFL."""
    made: list[tuple[JobEngine, BFLClient, AIMLClient]] = []

    async def engine(*, failover: bool = True, bfl_url: str | None = None) -> JobEngine:
        bfl = BFLClient(
            BFL_KEY, bfl_url or fake_bfl.base_url, backoff_base=0.01, allow_loopback=True
        )
        backup = AIMLClient(AIML_KEY, aiml.base_url, backoff_base=0.01, allow_loopback=True)
        built = JobEngine(
            db,
            {"bfl": bfl, "aiml": backup},
            notifier,
            polling=FAST_POLLING,
            failover=failover,
        )
        made.append((built, bfl, backup))
        await built.start()
        return built

    yield engine
    for built, bfl, backup in made:
        await built.stop()
        await bfl.aclose()
        await backup.aclose()


async def run(engine: JobEngine, request: GenerationRequest) -> Job:
    job, _ = await engine.accept(request)
    [final] = await engine.wait_closed([job.id], 10)
    return final


async def ledger_row(db: Database, job_id: str) -> tuple[str, str, int]:
    row = await db.fetch_one(
        "SELECT status, variant, credits_mc FROM ledger WHERE job_id = ?", (job_id,)
    )
    assert row is not None
    return row["status"], row["variant"], row["credits_mc"]


def failovers(engine: JobEngine, variant: str, reason: str) -> float:
    value = engine.metrics.failovers.labels(variant=variant, reason=reason)._value.get()
    return float(value)


def png(width: int, height: int) -> InputImage:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (20, 90, 200)).save(buffer, "PNG")
    return InputImage("image/png", width, height, buffer.getvalue())


# --------------------------------------------------------------------------- it happens
@pytest.mark.parametrize(
    ("variant", "model", "usd", "options"),
    [
        ("pro", "blackforestlabs/flux-2-pro", 0.0315, {"safety_tolerance": 0}),
        ("max", "blackforestlabs/flux-2-max", 0.0735, {"safety_tolerance": 4}),
    ],
)
async def test_bfl_out_of_credits_sends_the_job_to_the_aiml_api_charged_its_cost(
    variant: str,
    model: str,
    usd: float,
    options: dict[str, int],
    build: Build,
    db: Database,
    fake_bfl: FakeBFL,
    aiml: FakeAIML,
    notifier: RecordingNotifier,
) -> None:
    fake_bfl.credits = 0  # every submit answers 402
    engine = await build()
    request = make_request(
        "a lighthouse at dusk",
        variant=variant,
        seed=77,
        width=1024,
        height=768,
        options={**options, "output_format": "png"},
    )
    final = await run(engine, request)

    assert [s.status for s in fake_bfl.submissions] == [402]
    [sent] = aiml.requests
    assert sent.body == {
        "model": model,
        "prompt": "a lighthouse at dusk",
        "seed": 77,
        "image_size": {"width": 1024, "height": 768},
        # The member's strictness kept: BFL's strictest (0) is the AI/ML API's strictest.
        "safety_tolerance": str(max(1, options["safety_tolerance"])),
        "output_format": "png",
    }
    assert final.state is JobState.DELIVERED
    assert (final.provider, final.variant, final.failover_from) == (
        "aiml",
        f"{variant}-aiml",
        variant,
    )
    assert failover_note(final) == (
        "Made by the backup provider (AI/ML API) because BFL's account is out of credits."
    )
    assert notifier.deliver_calls == {final.id: 1}
    # The ledger charged what the AI/ML API reported (usd_spent), under the backup variant.
    assert await ledger_row(db, final.id) == ("charged", f"{variant}-aiml", round(usd * 100_000))
    assert final.cost == pytest.approx(usd * 100)
    assert failovers(engine, variant, "no_credits") == 1


async def test_a_request_with_references_goes_to_pro_edit(
    build: Build, db: Database, fake_bfl: FakeBFL, aiml: FakeAIML
) -> None:
    fake_bfl.credits = 0
    engine = await build()
    reference = png(64, 48)
    final = await run(engine, make_request("make it blue", inputs=[reference]))

    [sent] = aiml.requests
    assert sent.body["model"] == "blackforestlabs/flux-2-pro-edit"
    assert len(sent.body["image_urls"]) == 1
    assert sent.ignored_fields == ()
    assert final.state is JobState.DELIVERED
    status, variant, _ = await ledger_row(db, final.id)
    assert (status, variant) == ("charged", "pro-aiml")


async def test_bfl_unreachable_sends_the_job_to_the_aiml_api(
    build: Build, db: Database, aiml: FakeAIML
) -> None:
    with closed_port() as port:
        engine = await build(bfl_url=f"http://127.0.0.1:{port}")
        final = await run(engine, make_request("nobody home"))

    assert len(aiml.requests) == 1
    assert final.state is JobState.DELIVERED
    assert final.provider == "aiml"
    assert failover_note(final) == (
        "Made by the backup provider (AI/ML API) because BFL could not be reached or was "
        "overloaded."
    )
    assert (await ledger_row(db, final.id))[:2] == ("charged", "pro-aiml")
    assert failovers(engine, "pro", "unavailable") == 1


async def test_a_storm_of_503s_that_outlasts_the_retries_sends_the_job_on(
    build: Build, fake_bfl: FakeBFL, aiml: FakeAIML
) -> None:
    """503 is BFL's refusal before reading the request: after every retry, nothing exists."""
    fake_bfl.submit_faults = [SubmitFault(503, create_task=False) for _ in range(4)]
    engine = await build()
    final = await run(engine, make_request("overloaded"))

    assert [s.status for s in fake_bfl.submissions] == [503] * 4
    assert len(fake_bfl.tasks) == 0
    assert len(aiml.requests) == 1
    assert final.state is JobState.DELIVERED


# --------------------------------------------------------------------------- it must not
@pytest.mark.parametrize(
    ("fault", "error"),
    [
        # BFL read the request, then failed: the task may exist and be billed.
        (SubmitFault(500, create_task=True), SubmitOutcomeUnknown.user_message),
        (SubmitFault(502, create_task=False), SubmitOutcomeUnknown.user_message),
        (SubmitFault(504, create_task=False), SubmitOutcomeUnknown.user_message),
    ],
)
async def test_a_submit_whose_outcome_is_unknown_is_never_sent_twice(
    fault: SubmitFault,
    error: str,
    build: Build,
    db: Database,
    fake_bfl: FakeBFL,
    aiml: FakeAIML,
) -> None:
    fake_bfl.submit_faults = [fault]
    engine = await build()
    final = await run(engine, make_request("maybe made"))

    assert aiml.requests == []
    assert (final.state, final.error, final.provider) == (JobState.FAILED, error, "bfl")
    assert (await ledger_row(db, final.id))[:2] == ("refunded", "pro")


async def test_a_moderated_request_is_never_sent_to_the_backup(
    build: Build, db: Database, fake_bfl: FakeBFL, aiml: FakeAIML
) -> None:
    fake_bfl.script("forbidden", Outcome(final_status="Request Moderated"))
    engine = await build()
    final = await run(engine, make_request("forbidden"))

    assert aiml.requests == []
    assert (final.state, final.error) == (JobState.MODERATED, MODERATED_MESSAGE)
    assert (await ledger_row(db, final.id))[:2] == ("refunded", "pro")


async def test_a_rejected_request_is_never_sent_to_the_backup(
    build: Build, fake_bfl: FakeBFL, aiml: FakeAIML
) -> None:
    fake_bfl.submit_faults = [
        SubmitFault(422, create_task=False, body={"detail": "prompt is not allowed"})
    ]
    engine = await build()
    final = await run(engine, make_request("invalid somehow"))

    assert aiml.requests == []
    assert final.state is JobState.FAILED
    assert final.error == ProviderRejected("prompt is not allowed").user_message


async def test_with_failover_off_402_fails_as_it_always_did(
    build: Build, db: Database, fake_bfl: FakeBFL, aiml: FakeAIML
) -> None:
    fake_bfl.credits = 0
    engine = await build(failover=False)
    final = await run(engine, make_request("no credits"))

    assert aiml.requests == []
    assert (final.state, final.error) == (JobState.FAILED, InsufficientCredits.user_message)
    assert (await ledger_row(db, final.id))[:2] == ("refunded", "pro")


async def test_only_pro_and_max_fail_over(build: Build, fake_bfl: FakeBFL, aiml: FakeAIML) -> None:
    fake_bfl.credits = 0
    engine = await build()
    final = await run(engine, make_request("cheap", variant="klein-4b"))

    assert aiml.requests == []
    assert (final.state, final.error) == (JobState.FAILED, InsufficientCredits.user_message)


# --------------------------------------------------------------------------- its reservation
async def test_a_backup_estimate_the_role_allowance_cannot_cover_is_refused_uncharged(
    build: Build, db: Database, fake_bfl: FakeBFL, aiml: FakeAIML, notifier: RecordingNotifier
) -> None:
    """BFL's pro is reserved at 3 credits; the AI/ML API's costs 3.15. The member's role
    allows 3.1 a day: the difference does not fit, so nothing is sent or charged."""
    role = 77
    fake_bfl.credits = 0
    engine = await build()
    await engine.ledger.admin.set_limit(
        GUILD, MOD, Scope.ROLE, role, Period.DAY, Metric.CREDITS, 3100
    )
    request = dataclasses.replace(make_request("just over"), role_ids=(role,))
    final = await run(engine, request)

    assert aiml.requests == []
    assert final.state is JobState.FAILED
    assert final.error == (
        "BFL's account is out of credits, and the backup provider (AI/ML API) would need "
        "0.15 more credits than were held for this request. This request would go over the "
        f"daily credit allowance for your role <@&{role}> (3.1 credits a day). Left today: "
        "0.1 credits; it needs 0 images and 0.15 credits. It resets "
        f"{final.error.rsplit('It resets ', 1)[1]}"
    )
    assert final.error.endswith("Nothing was charged.")
    assert (final.provider, final.variant) == ("bfl", "pro")  # the hand-over rolled back
    assert await ledger_row(db, final.id) == ("refunded", "pro", 0)
    usage = await engine.ledger.member_usage(GUILD, request.user_id)
    assert (usage.windows[0].images, usage.windows[0].credits_mc) == (0, 0)
    assert failovers(engine, "pro", "refused") == 1
    shown = notifier.outcome(final.id)
    assert shown is not None and shown.text == final.error


async def test_a_backup_estimate_within_the_allowance_reserves_the_difference(
    build: Build, db: Database, fake_bfl: FakeBFL, aiml: FakeAIML
) -> None:
    fake_bfl.credits = 0
    engine = await build()
    await engine.ledger.admin.set_limit(
        GUILD, MOD, Scope.USER, 1001, Period.DAY, Metric.CREDITS, 3150
    )
    final = await run(engine, make_request("exactly enough"))

    assert final.state is JobState.DELIVERED
    assert final.estimated_cost == 3.15
    reserved = await db.fetch_value("SELECT reserved_mc FROM ledger WHERE job_id = ?", (final.id,))
    assert reserved == 3150  # BFL's 3 plus the difference
