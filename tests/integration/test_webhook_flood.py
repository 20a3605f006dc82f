"""A flood of unauthenticated webhooks costs neither database reads nor a log line each,
even when they name a real job in flight: job ids are public (every button carries one), so
only the tagged URL the bot gave BFL is looked up."""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from bot.jobs.engine import JobEngine, WebhookConfig
from bot.jobs.following import PollingPolicy
from bot.jobs.models import JobState
from bot.operations.metrics import Metrics
from bot.operations.web import HealthChecks, ThrottledWarnings, WebServer, create_app
from bot.providers.bfl import BFLClient
from bot.storage.db import Database
from tests.conftest import BFL_KEY, make_request
from tests.fakes.bfl_server import FakeBFL, Outcome


@dataclass
class Receiver:
    engine: JobEngine
    url: str
    reads: list[str]  # job ids the engine looked up in the database


@pytest.fixture
async def receiver(db: Database, fake_bfl: FakeBFL) -> AsyncIterator[Receiver]:
    metrics = Metrics(process_metrics=False)

    async def ping() -> object:
        return await db.fetch_value("SELECT 1")

    health = HealthChecks(ping_database=ping, discord_connected=lambda: True, queue_depth=lambda: 0)
    holder: dict[str, JobEngine] = {}

    class Target:
        async def webhook_subscription(self, job_id: str) -> Any:
            return await holder["engine"].webhook_subscription(job_id)

        async def webhook_result(self, job_id: str, task_id: str, result: Any) -> None:
            await holder["engine"].webhook_result(job_id, task_id, result)

    server = WebServer(
        create_app(metrics=metrics, health=health, webhook_target=Target()), "127.0.0.1", 0
    )
    await server.start()
    client = BFLClient(BFL_KEY, fake_bfl.base_url, allow_loopback=True)
    engine = JobEngine(
        db,
        {"bfl": client},
        metrics=metrics,
        notifier=_Silent(),
        polling=PollingPolicy(initial=0.05, maximum=0.2, deadline=10),
        webhooks=WebhookConfig(f"http://127.0.0.1:{server.port}", grace=5.0),
    )
    holder["engine"] = engine
    reads: list[str] = []
    real_get = engine.store.get

    async def counting_get(job_id: str) -> Any:
        reads.append(job_id)
        return await real_get(job_id)

    engine.store.get = counting_get  # type: ignore[method-assign]
    await engine.start()
    try:
        yield Receiver(engine, f"http://127.0.0.1:{server.port}/webhooks/bfl", reads)
    finally:
        await engine.stop()
        await client.aclose()
        await server.stop()


async def _until(condition: Callable[[], bool], within: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not condition():
        assert loop.time() < deadline, "timed out"
        await asyncio.sleep(0.01)


class _Silent:
    async def job_progress(self, job: Any, *, queue_position: int | None) -> None:
        return None

    async def job_delivered(self, job: Any, images: Any) -> int:
        return 1

    async def job_failed(self, job: Any) -> None:
        return None


async def test_unknown_ids_are_refused_from_memory_with_few_log_lines(
    receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="bot.operations.web")
    async with httpx.AsyncClient() as http:
        for n in range(200):
            # Made-up ids, half of them with a made-up tag (bot/jobs/webhooks.py).
            made_up = secrets.token_hex(8) + ("" if n % 2 else f"_{secrets.token_hex(8)}")
            answer = await http.post(
                f"{receiver.url}/{made_up}",
                json={"id": "x", "status": "Ready"},
                headers={"X-Webhook-Secret": "guess"},
            )
            assert answer.status_code == 404
    assert receiver.reads == []  # not one database read for 200 made-up ids
    rejected = [r for r in caplog.records if "rejected" in r.getMessage()]
    assert len(rejected) == 1


async def test_an_untagged_id_of_a_job_in_flight_is_refused_without_a_database_read(
    receiver: Receiver, fake_bfl: FakeBFL
) -> None:
    fake_bfl.script("in flight", Outcome(latency=60))  # still running when the test ends
    job, _ = await receiver.engine.accept(make_request("in flight"))
    await _until(lambda: any(s.status == 200 for s in fake_bfl.submissions))
    [submission] = fake_bfl.submissions
    hook_url, secret = submission.body["webhook_url"], submission.body["webhook_secret"]
    assert hook_url.startswith(f"{receiver.url}/{job.id}_")
    before = len(receiver.reads)
    async with httpx.AsyncClient() as http:
        # Even with the job's own secret and task: the bare id, or a made-up tag, is refused.
        for url_id in (job.id, f"{job.id}_{'0' * 16}", f"{job.id}_"):
            answer = await http.post(
                f"{receiver.url}/{url_id}",
                json={"id": submission.task_id, "status": "Generating"},
                headers={"X-Webhook-Secret": secret},
            )
            assert answer.status_code == 404, url_id
        assert receiver.reads[before:] == []  # refused from memory
        # The URL BFL was given is looked up and verified.
        answer = await http.post(
            hook_url,
            json={"id": submission.task_id, "status": "Generating"},
            headers={"X-Webhook-Secret": secret},
        )
    assert answer.status_code == 200
    assert job.id in receiver.reads[before:]


async def test_a_real_webhook_still_gets_through_and_a_late_duplicate_is_verified(
    receiver: Receiver, fake_bfl: FakeBFL
) -> None:
    fake_bfl.webhook_mode = "duplicate"
    job, _ = await receiver.engine.accept(make_request("hooked"))
    [final] = await receiver.engine.wait_closed([job.id], 5)
    assert final.state is JobState.DELIVERED
    assert receiver.engine.stats.polls == 0  # the webhook itself ended the job
    # After the job ended, its URL's tag still names it: a duplicate gets 200 (the job's
    # secret was erased when it closed, so there is nothing left to verify or change).
    hook_url = fake_bfl.submissions[0].body["webhook_url"]
    assert hook_url.startswith(f"{receiver.url}/{job.id}_")
    async with httpx.AsyncClient() as http:
        answer = await http.post(
            hook_url,
            json={"id": final.provider_task_id, "status": "Ready"},
            headers={"X-Webhook-Secret": final.webhook_secret or ""},
        )
    assert answer.status_code == 200


def test_throttled_warnings_say_how_many_were_held_back(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [1000.0]
    warnings = ThrottledWarnings(logging.getLogger("test.throttle"), 60.0, clock=lambda: now[0])
    caplog.set_level(logging.WARNING, logger="test.throttle")
    for _ in range(50):
        warnings.warning("bad_secret", "webhook for job %s rejected: %s", "j", "bad_secret")
    warnings.warning("unknown_task", "webhook for job %s rejected: %s", "k", "unknown_task")
    now[0] += 61
    warnings.warning("bad_secret", "webhook for job %s rejected: %s", "j2", "bad_secret")
    assert [r.getMessage() for r in caplog.records] == [
        "webhook for job j rejected: bad_secret",
        "webhook for job k rejected: unknown_task",
        "webhook for job j2 rejected: bad_secret (and 49 more like it in the last 61 s)",
    ]
