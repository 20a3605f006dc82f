"""The BFL client on its own: fallback polling, credits, byte cap, where the key may go."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from bot.catalogue import get_variant
from bot.errors import ProviderAccessDenied, ResultTooLarge
from bot.providers.base import TaskOutcome
from bot.providers.bfl import BFLClient, classify_status, parse_task_payload
from tests.conftest import BFL_KEY
from tests.fakes.bfl_server import FakeBFL


@pytest.fixture
async def client(fake_bfl: FakeBFL) -> AsyncIterator[BFLClient]:
    bfl = BFLClient(BFL_KEY, fake_bfl.base_url, backoff_base=0.01, allow_loopback=True)
    yield bfl
    await bfl.aclose()


async def test_without_a_polling_url_it_falls_back_to_get_result(
    client: BFLClient, fake_bfl: FakeBFL
) -> None:
    variant = get_variant("klein-4b")
    submission = await client.submit(variant, variant.validate("x", seed=1), [], user_id=1)
    task = fake_bfl.tasks[submission.task_id]
    result = await client.poll(submission.task_id, None)
    assert result.outcome in (TaskOutcome.RUNNING, TaskOutcome.READY)
    assert task.polls == 1


async def test_credits_reads_the_balance(client: BFLClient, fake_bfl: FakeBFL) -> None:
    fake_bfl.credits = 123.5
    assert await client.credits() == 123.5


async def test_a_wrong_key_is_access_denied(fake_bfl: FakeBFL) -> None:
    bad = BFLClient("not-the-key", fake_bfl.base_url, allow_loopback=True)
    try:
        with pytest.raises(ProviderAccessDenied):
            await bad.credits()
    finally:
        await bad.aclose()


async def test_results_over_the_byte_cap_are_refused(fake_bfl: FakeBFL) -> None:
    small = BFLClient(BFL_KEY, fake_bfl.base_url, max_result_bytes=100, allow_loopback=True)
    try:
        fake_bfl.latency = 0  # ready at once
        variant = get_variant("klein-4b")
        submission = await small.submit(variant, variant.validate("x", seed=1), [], user_id=1)
        result = await small.poll(submission.task_id, submission.polling_url)
        assert result.outcome is TaskOutcome.READY
        with pytest.raises(ResultTooLarge):
            await small.download(result.sample_urls[0])
    finally:
        await small.aclose()


async def test_the_key_is_never_sent_to_the_image_delivery_host() -> None:
    seen: list[dict[str, str]] = []

    async def sample(request: web.Request) -> web.Response:
        seen.append(dict(request.headers))
        return web.Response(status=403)

    app = web.Application()
    app.router.add_get("/sample.jpg", sample)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    # the API base is elsewhere
    client = BFLClient(BFL_KEY, "http://127.0.0.1:1", allow_loopback=True)
    try:
        with pytest.raises(Exception, match="403"):
            await client.download(f"http://127.0.0.1:{port}/sample.jpg")
    finally:
        await client.aclose()
        await runner.cleanup()
    assert seen and all("x-key" not in {k.lower() for k in headers} for headers in seen)


def test_status_values_are_classified_defensively() -> None:
    assert classify_status("Pending") is TaskOutcome.RUNNING
    assert classify_status("Reasoning") is TaskOutcome.RUNNING
    assert classify_status("Generating") is TaskOutcome.RUNNING
    assert classify_status("SUCCESS") is TaskOutcome.READY
    assert classify_status("Content Moderated") is TaskOutcome.MODERATED
    assert classify_status("FAILED") is TaskOutcome.FAILED
    assert classify_status("Task not found") is TaskOutcome.NOT_FOUND
    assert classify_status("Dreaming") is TaskOutcome.UNKNOWN
    ready_without_image = parse_task_payload({"status": "Ready", "result": {}})
    assert ready_without_image.outcome is TaskOutcome.FAILED
