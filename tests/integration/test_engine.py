"""The job engine against the BFL stand-in: exact requests, exact bytes, every ending."""

from __future__ import annotations

import base64
import io

import pytest
from PIL import Image

from bot.jobs.engine import MODERATED_MESSAGE, TIMED_OUT_MESSAGE, JobEngine
from bot.jobs.following import PollingPolicy
from bot.jobs.models import GenerationRequest, Job, JobState
from bot.providers.base import InputImage
from tests.conftest import BFL_KEY, EngineFactory, make_request
from tests.fakes.bfl_server import FakeBFL, Outcome, SubmitFault
from tests.fakes.notifier import RecordingNotifier


def png(width: int, height: int, colour: tuple[int, int, int] = (200, 30, 30)) -> InputImage:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(buffer, "PNG")
    return InputImage("image/png", width, height, buffer.getvalue())


async def run_to_end(engine: JobEngine, request: GenerationRequest) -> Job:
    """Accept the request and wait until its outcome is shown; returns the job as accepted."""
    job, _ = await engine.accept(request)
    await engine.wait_closed([job.id], 10)
    return job


EXPECTED_BODIES = {
    "pro": {"disable_pup": False},
    "max": {"disable_pup": True},
    "flex": {"steps": 28, "guidance": 3.5, "prompt_upsampling": True},
    "klein-4b": {},
    "klein-9b": {},
}
VARIANT_OPTIONS = {
    "pro": {},
    "max": {"prompt_upsampling": False},
    "flex": {"steps": 28, "guidance": 3.5},
    "klein-4b": {},
    "klein-9b": {},
}


@pytest.mark.parametrize("variant", list(EXPECTED_BODIES))
async def test_happy_path_for_every_bfl_variant(
    variant: str, make_engine: EngineFactory, fake_bfl: FakeBFL, notifier: RecordingNotifier
) -> None:
    engine = await make_engine()
    reference = png(64, 48)
    request = make_request(
        f"a lighthouse ({variant})",
        variant=variant,
        seed=77,
        width=512,
        height=384,
        options={**VARIANT_OPTIONS[variant], "output_format": "png"},
        inputs=[reference],
    )
    job, position = await engine.accept(request)
    assert position == 1
    await engine.wait_closed([job.id], 10)

    [submission] = fake_bfl.submissions
    assert submission.endpoint == f"flux-2-{variant}"
    assert submission.headers["x-key"] == BFL_KEY
    assert submission.body == {
        "prompt": f"a lighthouse ({variant})",
        "seed": 77,
        "width": 512,
        "height": 384,
        **EXPECTED_BODIES[variant],
        "safety_tolerance": 2,
        "output_format": "png",
        "input_image": base64.b64encode(reference.data).decode(),
        "user": engine.queue.keys("bfl")[0].client.user_tag(1001),
    }
    shown = notifier.outcome(job.id)
    assert shown is not None and shown.kind == "result"
    assert shown.images == [fake_bfl.image_bytes(submission.task_id or "")]
    stored = await engine.store.require(job.id)
    assert stored.state is JobState.DELIVERED and stored.closed
    assert stored.provider_task_id == submission.task_id
    assert stored.cost == fake_bfl.tasks[submission.task_id or ""].cost
    assert stored.result_seed == 77
    assert await engine.store.outputs(job.id) == []  # dropped once posted


async def test_polls_the_returned_polling_url_not_a_rebuilt_one(
    make_engine: EngineFactory, fake_bfl: FakeBFL, notifier: RecordingNotifier
) -> None:
    fake_bfl.latency = 0.15
    engine = await make_engine()
    job = await run_to_end(engine, make_request("poll me"))
    task = fake_bfl.tasks[fake_bfl.submissions[0].task_id or ""]
    assert task.polls >= 2
    stored = await engine.store.require(job.id)
    assert stored.polling_url is not None and "/v1/poll/" in stored.polling_url
    assert "Generating" in {status for _, status, _ in notifier.progress}


@pytest.mark.parametrize(
    ("final_status", "state", "message"),
    [
        ("Request Moderated", JobState.MODERATED, MODERATED_MESSAGE),
        ("Content Moderated", JobState.MODERATED, MODERATED_MESSAGE),
        (
            "Error",
            JobState.FAILED,
            "The image service could not make this image. You were not charged.",
        ),
    ],
)
async def test_each_failure_status_ends_the_job_with_a_clear_message(
    final_status: str,
    state: JobState,
    message: str,
    make_engine: EngineFactory,
    fake_bfl: FakeBFL,
    notifier: RecordingNotifier,
) -> None:
    fake_bfl.script("forbidden thing", Outcome(final_status=final_status))
    engine = await make_engine()
    job = await run_to_end(engine, make_request("forbidden thing"))
    stored = await engine.store.require(job.id)
    assert (stored.state, stored.error, stored.closed) == (state, message, True)
    shown = notifier.outcome(job.id)
    assert shown is not None and (shown.kind, shown.text) == ("failure", message)


async def test_reasoning_and_unknown_running_statuses_keep_polling(
    make_engine: EngineFactory, fake_bfl: FakeBFL, notifier: RecordingNotifier
) -> None:
    fake_bfl.script(
        "think", Outcome(running_statuses=("Pending", "Reasoning", "Thinking"), latency=0.6)
    )
    engine = await make_engine()
    job = await run_to_end(engine, make_request("think"))
    assert (await engine.store.require(job.id)).state is JobState.DELIVERED
    seen = {status for _, status, _ in notifier.progress}
    assert {"Reasoning", "Thinking"} <= seen


async def test_an_endless_unknown_status_fails_at_the_deadline(
    make_engine: EngineFactory, fake_bfl: FakeBFL, notifier: RecordingNotifier
) -> None:
    fake_bfl.script("stuck", Outcome(final_status="Queued-Weird", latency=0.01))
    engine = await make_engine(polling=PollingPolicy(initial=0.02, maximum=0.05, deadline=0.4))
    job = await run_to_end(engine, make_request("stuck"))
    stored = await engine.store.require(job.id)
    assert (stored.state, stored.error) == (JobState.FAILED, TIMED_OUT_MESSAGE)


@pytest.mark.parametrize(
    ("fault", "message"),
    [
        (
            SubmitFault(status=402, create_task=False),
            "The bot's image-service account is out of credits. Please tell a server admin.",
        ),
        (
            SubmitFault(status=403, create_task=False),
            "The bot's API key is not allowed to use this model. Please tell a server admin.",
        ),
        (
            SubmitFault(status=401, create_task=False),
            "The bot's key for the image service is not working, so nothing was made or charged. "
            "The bot's operator has been told.",
        ),
        (
            SubmitFault(status=500, create_task=True),
            "The image service did not confirm the request, so it was stopped rather than risk "
            "paying twice. Please try again.",
        ),
    ],
)
async def test_submit_errors_fail_once_and_are_never_resubmitted(
    fault: SubmitFault,
    message: str,
    make_engine: EngineFactory,
    fake_bfl: FakeBFL,
    notifier: RecordingNotifier,
) -> None:
    fake_bfl.submit_faults.append(fault)
    engine = await make_engine()
    job = await run_to_end(engine, make_request("x"))
    assert len(fake_bfl.submissions) == 1
    stored = await engine.store.require(job.id)
    assert (stored.state, stored.error) == (JobState.FAILED, message)
    assert notifier.fail_calls == {job.id: 1}


async def test_a_422_names_the_offending_field(
    make_engine: EngineFactory, fake_bfl: FakeBFL, notifier: RecordingNotifier
) -> None:
    fake_bfl.submit_faults.append(
        SubmitFault(
            status=422,
            create_task=False,
            body={
                "detail": [
                    {
                        "loc": ["body", "width"],
                        "msg": "must be a multiple of 16",
                        "type": "value_error",
                    }
                ]
            },
        )
    )
    engine = await make_engine()
    job = await run_to_end(engine, make_request("x"))
    stored = await engine.store.require(job.id)
    assert stored.error == (
        "The image service rejected the request (width): must be a multiple of 16"
    )


async def test_a_read_timeout_on_submit_is_not_retried(
    make_engine: EngineFactory, fake_bfl: FakeBFL, notifier: RecordingNotifier
) -> None:
    fake_bfl.submit_faults.append(SubmitFault(status=200, delay=1.0))
    engine = await make_engine(start=False)
    client = engine.queue.keys("bfl")[0].client
    client._http.timeout = __import__("httpx").Timeout(0.2)  # type: ignore[attr-defined]
    await engine.start()
    job = await run_to_end(engine, make_request("slow"))
    assert len(fake_bfl.submissions) == 1
    assert (await engine.store.require(job.id)).state is JobState.FAILED


async def test_503_is_retried_with_backoff_then_succeeds(
    make_engine: EngineFactory, fake_bfl: FakeBFL, notifier: RecordingNotifier
) -> None:
    fake_bfl.submit_faults.extend([SubmitFault(status=503, create_task=False)] * 2)
    engine = await make_engine()
    job = await run_to_end(engine, make_request("retry"))
    assert [s.status for s in fake_bfl.submissions] == [503, 503, 200]
    assert (await engine.store.require(job.id)).state is JobState.DELIVERED


async def test_poll_errors_are_retried(
    make_engine: EngineFactory, fake_bfl: FakeBFL, notifier: RecordingNotifier
) -> None:
    fake_bfl.poll_faults.extend([500, 502, 429])
    engine = await make_engine()
    job = await run_to_end(engine, make_request("flaky polls"))
    assert (await engine.store.require(job.id)).state is JobState.DELIVERED


async def test_an_expired_result_link_fails_clearly(
    make_engine: EngineFactory, fake_bfl: FakeBFL, notifier: RecordingNotifier
) -> None:
    fake_bfl.result_ttl = 0.0
    engine = await make_engine()
    job = await run_to_end(engine, make_request("too late"))
    stored = await engine.store.require(job.id)
    assert stored.state is JobState.FAILED
    assert stored.error == "The finished image could not be downloaded (its link may have expired)."


async def test_429_back_pressure_delivers_every_job(
    make_engine: EngineFactory, fake_bfl: FakeBFL, notifier: RecordingNotifier
) -> None:
    fake_bfl.max_active = 3
    fake_bfl.latency = 0.1
    engine = await make_engine(max_active=24)
    jobs = [
        (await engine.accept(make_request(f"job {n}", user_id=n % 4 + 1)))[0] for n in range(30)
    ]
    await engine.wait_closed([j.id for j in jobs], 30)
    states = {(await engine.store.require(j.id)).state for j in jobs}
    assert states == {JobState.DELIVERED}
    assert fake_bfl.rejected_429 > 0
    assert fake_bfl.max_active_seen <= 3
    accepted = [s for s in fake_bfl.submissions if s.status == 200]
    assert len(accepted) == 30  # a 429 is waited out, never turned into a second task


async def test_the_scheduler_keeps_our_own_cap(
    make_engine: EngineFactory, fake_bfl: FakeBFL, notifier: RecordingNotifier
) -> None:
    fake_bfl.latency = 0.1
    engine = await make_engine(max_active=4)
    jobs = [(await engine.accept(make_request(f"job {n}")))[0] for n in range(12)]
    await engine.wait_closed([j.id for j in jobs], 20)
    assert fake_bfl.max_active_seen == 4
    assert fake_bfl.rejected_429 == 0


async def test_one_users_backlog_does_not_starve_another_user(
    make_engine: EngineFactory, fake_bfl: FakeBFL, notifier: RecordingNotifier
) -> None:
    fake_bfl.latency = 0.1
    engine = await make_engine(max_active=2, start=False)
    heavy = [(await engine.accept(make_request(f"heavy {n}", user_id=1)))[0] for n in range(20)]
    light, position = await engine.accept(make_request("light", user_id=2))
    assert position == 2
    await engine.start()
    await engine.wait_closed([j.id for j in [*heavy, light]], 20)
    order = [s.body["prompt"] for s in fake_bfl.submissions]
    assert order.index("light") <= 2


async def test_delivery_retries_through_discord_trouble(
    make_engine: EngineFactory, fake_bfl: FakeBFL, notifier: RecordingNotifier
) -> None:
    notifier.fail_next_deliveries = 1
    engine = await make_engine()
    job = await run_to_end(engine, make_request("persist"))
    assert notifier.deliver_calls[job.id] == 2
    assert (await engine.store.require(job.id)).state is JobState.DELIVERED


async def test_cancel_a_queued_job(make_engine: EngineFactory, notifier: RecordingNotifier) -> None:
    engine = await make_engine(start=False)
    job, _ = await engine.accept(make_request("never mind"))
    assert await engine.cancel(job.id)
    stored = await engine.store.require(job.id)
    assert (stored.state, stored.closed) == (JobState.CANCELLED, True)
    assert not await engine.cancel(job.id)
