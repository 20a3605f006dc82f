"""Webhooks through the real engine: BFL's stand-in calls our receiver over loopback."""

from __future__ import annotations

import asyncio
import io
import logging
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace

import pytest
from PIL import Image

from bot.jobs.engine import JobEngine, WebhookConfig
from bot.jobs.following import PollingPolicy
from bot.jobs.models import JobState
from bot.jobs.webhooks import WebhookSubscription
from bot.operations.metrics import Metrics
from bot.operations.web import HealthChecks, WebServer, create_app
from bot.providers.base import InputImage, TaskResult
from bot.providers.bfl import BFLClient
from bot.storage.db import Database
from tests.conftest import BFL_KEY, make_request
from tests.fakes.bfl_server import FakeBFL
from tests.fakes.notifier import RecordingNotifier


class LateTarget:
    """The receiver starts before the engine exists (the engine needs the receiver's URL)."""

    engine: JobEngine

    async def webhook_subscription(self, job_id: str) -> WebhookSubscription | None:
        return await self.engine.webhook_subscription(job_id)

    async def webhook_result(self, job_id: str, task_id: str, result: TaskResult) -> None:
        await self.engine.webhook_result(job_id, task_id, result)


@dataclass
class Rig:
    engine: JobEngine
    bfl: FakeBFL
    notifier: RecordingNotifier
    metrics: Metrics


async def build_rig(db: Database, bfl: FakeBFL, grace: float) -> AsyncIterator[Rig]:
    metrics = Metrics(process_metrics=False)
    target = LateTarget()

    async def ping() -> object:
        return await db.fetch_value("SELECT 1")

    health = HealthChecks(ping_database=ping, discord_connected=lambda: True, queue_depth=lambda: 0)
    server = WebServer(
        create_app(metrics=metrics, health=health, webhook_target=target), "127.0.0.1", 0
    )
    await server.start()
    client = BFLClient(BFL_KEY, bfl.base_url, allow_loopback=True)
    notifier = RecordingNotifier()
    engine = JobEngine(
        db,
        {"bfl": client},
        notifier,
        metrics=metrics,
        polling=PollingPolicy(initial=0.05, maximum=0.2, deadline=10),
        webhooks=WebhookConfig(f"http://127.0.0.1:{server.port}", grace=grace),
    )
    target.engine = engine
    await engine.start()
    try:
        yield Rig(engine, bfl, notifier, metrics)
    finally:
        await engine.stop()
        await client.aclose()
        await server.stop()


@pytest.fixture
async def rig(db: Database, fake_bfl: FakeBFL) -> AsyncIterator[Rig]:
    async for built in build_rig(db, fake_bfl, grace=5.0):
        yield built


async def test_a_webhook_delivers_without_any_poll(rig: Rig) -> None:
    job, _ = await rig.engine.accept(make_request("hooked"))
    [final] = await rig.engine.wait_closed([job.id], 5)
    assert final.state is JobState.DELIVERED
    assert rig.engine.stats.polls == 0
    [submission] = rig.bfl.submissions
    # The job id, tagged so any process can tell a real job's URL from a made-up one.
    assert re.search(rf"/webhooks/bfl/{job.id}_[0-9a-f]{{16}}$", submission.body["webhook_url"])
    assert submission.body["webhook_secret"]  # erased from the job once it closed
    assert [a.status_code for a in rig.bfl.webhook_attempts] == [200]
    shown = rig.notifier.outcome(job.id)
    assert shown is not None
    assert shown.images == [rig.bfl.image_bytes(submission.task_id or "")]


async def test_signed_webhooks_are_accepted_too(rig: Rig) -> None:
    rig.bfl.webhook_mode = "hmac"
    job, _ = await rig.engine.accept(make_request("signed"))
    await rig.engine.wait_closed([job.id], 5)
    assert rig.engine.stats.polls == 0


async def test_a_duplicated_webhook_delivers_once(rig: Rig) -> None:
    rig.bfl.webhook_mode = "duplicate"
    job, _ = await rig.engine.accept(make_request("twice"))
    await rig.engine.wait_closed([job.id], 5)
    for _ in range(200):  # the stand-in records attempts but has no event to await
        if len(rig.bfl.webhook_attempts) == 2:
            break
        await asyncio.sleep(0.01)
    assert [a.status_code for a in rig.bfl.webhook_attempts] == [200, 200]
    assert rig.notifier.deliver_calls == {job.id: 1}
    assert len(rig.notifier.shown_for(job.id)) == 1


@pytest.mark.parametrize("mode", ["drop", "wrong_secret"])
async def test_a_missing_or_forged_webhook_falls_back_to_polling(
    db: Database, fake_bfl: FakeBFL, mode: str
) -> None:
    fake_bfl.webhook_mode = mode
    async for rig in build_rig(db, fake_bfl, grace=0.3):
        job, _ = await rig.engine.accept(make_request(f"no webhook ({mode})"))
        [final] = await rig.engine.wait_closed([job.id], 5)
        assert final.state is JobState.DELIVERED
        assert rig.engine.stats.polls >= 1
        assert all(a.status_code == 401 for a in fake_bfl.webhook_attempts)
        assert len(rig.notifier.shown_for(job.id)) == 1


async def test_a_webhook_racing_a_poll_delivers_once(db: Database, fake_bfl: FakeBFL) -> None:
    fake_bfl.latency = 0.2
    fake_bfl.webhook_delay = 0.0
    async for rig in build_rig(db, fake_bfl, grace=0.2):  # first poll lands with the webhook
        jobs = [(await rig.engine.accept(make_request(f"race {n}")))[0] for n in range(8)]
        finals = await rig.engine.wait_closed([j.id for j in jobs], 10)
        assert {f.state for f in finals} == {JobState.DELIVERED}
        assert rig.notifier.deliver_calls == {j.id: 1 for j in jobs}


async def test_no_secret_or_key_ever_reaches_the_logs(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    rig.bfl.webhook_mode = "wrong_secret"  # a rejection is logged too
    job, _ = await rig.engine.accept(make_request("quiet"))
    await rig.engine.wait_closed([job.id], 10)
    final = await rig.engine.store.require(job.id)
    secret = rig.bfl.submissions[0].body["webhook_secret"]
    assert secret
    text = "\n".join(record.getMessage() for record in caplog.records)
    assert caplog.records, "expected some logging to inspect"
    assert secret not in text
    assert BFL_KEY not in text
    assert secret not in repr(replace(final, webhook_secret=secret))


async def test_metrics_count_jobs_and_webhooks(rig: Rig) -> None:
    job, _ = await rig.engine.accept(make_request("counted"))
    await rig.engine.wait_closed([job.id], 5)
    text = rig.metrics.render().decode()
    assert 'fluxcord_jobs_total{state="delivered",variant="pro"} 1.0' in text
    assert "fluxcord_webhooks_accepted_total 1.0" in text
    assert 'fluxcord_credits_spent_total{provider="bfl",variant="pro"}' in text


async def test_an_outpainting_job_is_polled_since_its_route_has_no_webhook(rig: Rig) -> None:
    """With webhooks configured, outpainting still sends none (its schema refuses them):
    the job is followed by polling and its claim's secret is dropped at the submit."""
    image = InputImage("image/png", 32, 32, tiny_png(32, 32))
    request = make_request("", variant="outpaint", seed=None, inputs=[image], width=64, height=64)
    job, _ = await rig.engine.accept(request)
    [final] = await rig.engine.wait_closed([job.id], 5)
    assert final.state is JobState.DELIVERED
    [submission] = rig.bfl.submissions
    assert submission.status == 200
    assert "webhook_url" not in submission.body and "webhook_secret" not in submission.body
    assert rig.engine.stats.polls >= 1 and rig.bfl.webhook_attempts == []


def tiny_png(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (200, 80, 20)).save(buffer, "PNG")
    return buffer.getvalue()
