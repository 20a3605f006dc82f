"""The bot's web server against the BFL stand-in sending real webhooks over loopback.

The `WebhookTarget` here is a dict-backed double of the job engine; the engine integration
comes with its own tests.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import hmac
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from bot.jobs.webhooks import (
    WEBHOOK_PATH,
    WebhookSubscription,
    job_id_from_url,
    new_webhook_secret,
    tagged_job_id,
    url_tag,
    verify_webhook,
    webhook_task_result,
    webhook_url,
)
from bot.operations.metrics import Metrics
from bot.operations.web import HealthChecks, WebServer, create_app
from bot.providers.base import TaskOutcome, TaskResult
from bot.storage.db import Database, open_database
from bot.version import __version__
from tests.conftest import BFL_KEY
from tests.fakes.bfl_server import FakeBFL, Outcome

MAX_BODY = 4096
JOB = "0123456789abcdef"
# The fleet's key for webhook URL tags, as the engine reads it at start.
TAG_KEY = bytes(range(32))


# --------------------------------------------------------------------------- doubles
@dataclass
class DictTarget:
    """The engine's side of the receiver, as a dict: records every hand-over. Like the
    engine, it knows a job only by the tagged id its webhook URL carries."""

    subscriptions: dict[str, WebhookSubscription] = field(default_factory=dict)
    received: list[tuple[str, str, TaskResult]] = field(default_factory=list)
    lookups: list[str] = field(default_factory=list)

    def add_job(self, job_id: str, *, task_id: str | None = None) -> str:
        secret = new_webhook_secret()
        self.subscriptions[job_id] = WebhookSubscription(secret=secret, task_id=task_id)
        return secret

    def submitted(self, job_id: str, task_id: str) -> None:
        """What the engine does once the submit answer is written."""
        old = self.subscriptions[job_id]
        self.subscriptions[job_id] = WebhookSubscription(secret=old.secret, task_id=task_id)

    async def webhook_subscription(self, url_id: str) -> WebhookSubscription | None:
        self.lookups.append(url_id)
        job_id = job_id_from_url(TAG_KEY, url_id)
        return None if job_id is None else self.subscriptions.get(job_id)

    async def webhook_result(self, url_id: str, task_id: str, result: TaskResult) -> None:
        self.received.append((job_id_from_url(TAG_KEY, url_id) or url_id, task_id, result))


@dataclass
class HealthState:
    connected: bool = True
    depth: int = 3
    ping: Callable[[], Awaitable[object]] | None = None


# --------------------------------------------------------------------------- fixtures
@pytest.fixture
def target() -> DictTarget:
    return DictTarget()


@pytest.fixture
def metrics() -> Metrics:
    return Metrics()


@pytest.fixture
def health(db: Database) -> HealthState:
    async def select_one() -> object:
        return await db.fetch_value("SELECT 1")

    return HealthState(ping=select_one)


async def _serve(
    metrics: Metrics, health: HealthState, target: DictTarget | None, *, ping_timeout: float = 2.0
) -> WebServer:
    async def ping() -> object:
        assert health.ping is not None
        return await health.ping()

    metrics.bind_engine(queue_depth=lambda: health.depth, active_tasks=lambda: 2)
    app = create_app(
        metrics=metrics,
        health=HealthChecks(
            ping_database=ping,
            discord_connected=lambda: health.connected,
            queue_depth=lambda: health.depth,
            timeout=ping_timeout,
        ),
        webhook_target=target,
        max_webhook_bytes=MAX_BODY,
    )
    server = WebServer(app, "127.0.0.1", 0, shutdown_timeout=1.0)
    await server.start()
    return server


@pytest.fixture
async def server(
    metrics: Metrics, health: HealthState, target: DictTarget
) -> AsyncIterator[WebServer]:
    web_server = await _serve(metrics, health, target)
    yield web_server
    await web_server.stop()


@pytest.fixture
async def http(server: WebServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server.url) as client:
        yield client


# --------------------------------------------------------------------------- helpers
async def submit(
    fake: FakeBFL, url: str, secret: str | None, prompt: str = "a red fox at dawn"
) -> str:
    """Submit straight to the stand-in, as the BFL client will, with webhook fields."""
    body: dict[str, Any] = {"prompt": prompt, "seed": 7, "webhook_url": url}
    if secret is not None:
        body["webhook_secret"] = secret
    async with httpx.AsyncClient(base_url=fake.base_url, headers={"x-key": BFL_KEY}) as client:
        response = await client.post("/v1/flux-2-pro", json=body)
    assert response.status_code == 200, response.text
    task_id: str = response.json()["id"]
    return task_id


async def submit_job(
    fake: FakeBFL, server: WebServer, target: DictTarget, job_id: str = JOB, **kwargs: Any
) -> str:
    """Register the job (secret first, task id unknown), submit, record the task id."""
    secret = target.add_job(job_id)
    task_id = await submit(fake, webhook_url(server.url, job_id, key=TAG_KEY), secret, **kwargs)
    target.submitted(job_id, task_id)
    return task_id


async def eventually(check: Callable[[], bool], within: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not check():
        assert loop.time() < deadline, "timed out"
        await asyncio.sleep(0.01)


async def webhooks_sent(fake: FakeBFL, count: int) -> list[int | None]:
    await eventually(lambda: len(fake.webhook_attempts) >= count)
    await asyncio.sleep(0.1)  # and nothing more arrives
    return [attempt.status_code for attempt in fake.webhook_attempts]


def sample(metrics: Metrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def rejected(metrics: Metrics, reason: str) -> float | None:
    return sample(metrics, "fluxcord_webhooks_rejected_total", reason=reason)


async def post_webhook(
    http: httpx.AsyncClient, job_id: str, body: bytes, headers: dict[str, str]
) -> httpx.Response:
    return await http.post(
        f"{WEBHOOK_PATH}/{tagged_job_id(TAG_KEY, job_id)}",
        content=body,
        headers={"Content-Type": "application/json", **headers},
    )


def signed(body: bytes, secret: str) -> dict[str, str]:
    digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return {"X-BFL-Signature": f"sha256={digest}"}


# --------------------------------------------------------------------------- webhooks, real
async def test_happy_path_hands_the_result_over_once(
    fake_bfl: FakeBFL, server: WebServer, target: DictTarget, metrics: Metrics
) -> None:
    task_id = await submit_job(fake_bfl, server, target)

    assert await webhooks_sent(fake_bfl, 1) == [200]
    tagged = f"{JOB}_{url_tag(TAG_KEY, JOB)}"
    assert fake_bfl.webhook_attempts[0].url == f"{server.url}{WEBHOOK_PATH}/{tagged}"
    assert len(target.received) == 1
    job_id, got_task, result = target.received[0]
    assert (job_id, got_task) == (JOB, task_id)
    assert result.outcome is TaskOutcome.READY
    assert result.seed == 7
    # The stand-in's signed delivery link, exactly as a poll reports it, and it downloads.
    async with httpx.AsyncClient(base_url=fake_bfl.base_url, headers={"x-key": BFL_KEY}) as bfl:
        polled = (await bfl.get("/v1/get_result", params={"id": task_id})).json()
        assert result.sample_urls == (polled["result"]["sample"],)
        assert result.sample_urls[0].startswith(f"{fake_bfl.base_url}/delivery/{task_id}/")
        image = await bfl.get(result.sample_urls[0])
    assert image.content == fake_bfl.image_bytes(task_id)
    assert sample(metrics, "fluxcord_webhooks_accepted_total") == 1


@pytest.mark.parametrize("mode", ["hmac", "both"])
async def test_signature_modes_are_accepted(
    fake_bfl: FakeBFL, server: WebServer, target: DictTarget, mode: Any
) -> None:
    fake_bfl.webhook_mode = mode
    task_id = await submit_job(fake_bfl, server, target)

    assert await webhooks_sent(fake_bfl, 1) == [200]
    headers = fake_bfl.webhook_attempts[0].headers
    assert "X-BFL-Signature" in headers
    assert ("X-Webhook-Secret" in headers) == (mode == "both")
    assert [(j, t, r.outcome) for j, t, r in target.received] == [(JOB, task_id, TaskOutcome.READY)]


@pytest.mark.parametrize(
    ("final_status", "outcome"),
    [
        ("Content Moderated", TaskOutcome.MODERATED),
        ("Request Moderated", TaskOutcome.MODERATED),
        ("Error", TaskOutcome.FAILED),
    ],
)
async def test_failed_and_moderated_tasks_are_handed_over(
    fake_bfl: FakeBFL, server: WebServer, target: DictTarget, final_status: str, outcome: Any
) -> None:
    fake_bfl.script("blocked", Outcome(final_status=final_status))
    await submit_job(fake_bfl, server, target, prompt="blocked")

    assert await webhooks_sent(fake_bfl, 1) == [200]
    [(_, _, result)] = target.received
    assert result.outcome is outcome
    assert result.sample_urls == ()


async def test_wrong_secret_is_refused(
    fake_bfl: FakeBFL, server: WebServer, target: DictTarget, metrics: Metrics
) -> None:
    fake_bfl.webhook_mode = "wrong_secret"  # both headers, made with another secret
    await submit_job(fake_bfl, server, target)

    assert await webhooks_sent(fake_bfl, 1) == [401]
    assert target.received == []
    assert rejected(metrics, "bad_secret") == 1
    assert sample(metrics, "fluxcord_webhooks_accepted_total") == 0


async def test_missing_secret_is_refused(
    fake_bfl: FakeBFL, server: WebServer, target: DictTarget, metrics: Metrics
) -> None:
    target.add_job(JOB)
    # Submitted without a webhook_secret: the stand-in sends no authentication header.
    await submit(fake_bfl, webhook_url(server.url, JOB, key=TAG_KEY), secret=None)

    assert await webhooks_sent(fake_bfl, 1) == [401]
    assert "X-Webhook-Secret" not in fake_bfl.webhook_attempts[0].headers
    assert target.received == []
    assert rejected(metrics, "bad_secret") == 1


async def test_unknown_job_is_404(
    fake_bfl: FakeBFL, server: WebServer, target: DictTarget, metrics: Metrics
) -> None:
    await submit(
        fake_bfl, webhook_url(server.url, "feedfacefeedface", key=TAG_KEY), new_webhook_secret()
    )

    assert await webhooks_sent(fake_bfl, 1) == [404]
    assert target.received == []
    assert rejected(metrics, "unknown_task") == 1


async def test_a_task_that_is_not_the_jobs_is_404(
    fake_bfl: FakeBFL, server: WebServer, target: DictTarget, metrics: Metrics
) -> None:
    secret = target.add_job(JOB, task_id="the-task-this-job-really-has")
    await submit(fake_bfl, webhook_url(server.url, JOB, key=TAG_KEY), secret)

    assert await webhooks_sent(fake_bfl, 1) == [404]
    assert target.received == []
    assert rejected(metrics, "unknown_task") == 1


async def test_webhook_before_the_submit_answer_is_recorded(
    fake_bfl: FakeBFL, server: WebServer, target: DictTarget
) -> None:
    """The engine has the job and secret but not yet the task id: still verified, handed over
    with the delivery's task id."""
    secret = target.add_job(JOB)  # task id never recorded
    task_id = await submit(fake_bfl, webhook_url(server.url, JOB, key=TAG_KEY), secret)

    assert await webhooks_sent(fake_bfl, 1) == [200]
    assert [(j, t) for j, t, _ in target.received] == [(JOB, task_id)]


async def test_duplicate_is_answered_200_twice_and_handed_over_twice(
    fake_bfl: FakeBFL, server: WebServer, target: DictTarget, metrics: Metrics
) -> None:
    fake_bfl.webhook_mode = "duplicate"
    task_id = await submit_job(fake_bfl, server, target)

    assert await webhooks_sent(fake_bfl, 2) == [200, 200]
    # The receiver does not deduplicate: the engine's compare-and-set transitions do.
    assert [(j, t) for j, t, _ in target.received] == [(JOB, task_id), (JOB, task_id)]
    assert target.received[0][2] == target.received[1][2]
    assert sample(metrics, "fluxcord_webhooks_accepted_total") == 2


async def test_dropped_webhook_leaves_the_target_untouched_and_polling_still_works(
    fake_bfl: FakeBFL, server: WebServer, target: DictTarget
) -> None:
    fake_bfl.webhook_mode = "drop"
    task_id = await submit_job(fake_bfl, server, target)

    await asyncio.sleep(fake_bfl.latency + 0.3)
    assert fake_bfl.webhook_attempts == []
    assert target.received == []
    assert target.lookups == []
    async with httpx.AsyncClient(base_url=fake_bfl.base_url, headers={"x-key": BFL_KEY}) as bfl:
        polled = (await bfl.get("/v1/get_result", params={"id": task_id})).json()
    assert polled["status"] == "Ready"  # the engine's poll fallback finds the result


async def test_late_webhook_is_still_delivered(
    fake_bfl: FakeBFL, server: WebServer, target: DictTarget
) -> None:
    fake_bfl.webhook_delay = 0.3
    await submit_job(fake_bfl, server, target)

    assert await webhooks_sent(fake_bfl, 1) == [200]
    assert len(target.received) == 1


# --------------------------------------------------------------------------- webhooks, by hand
async def test_oversized_body_is_413_without_side_effect(
    http: httpx.AsyncClient, target: DictTarget, metrics: Metrics
) -> None:
    secret = target.add_job(JOB, task_id="t-1")
    body = json.dumps({"id": "t-1", "status": "Ready", "pad": "x" * MAX_BODY}).encode()

    # Declared too large: refused on Content-Length, before any lookup.
    response = await post_webhook(http, JOB, body, {"X-Webhook-Secret": secret})
    assert response.status_code == 413

    # No Content-Length (chunked): refused once the read passes the cap.
    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, 64 * 1024, 1024):
            yield (b"x" * 1024) if start else body[:1024]

    response = await http.post(
        f"{WEBHOOK_PATH}/{tagged_job_id(TAG_KEY, JOB)}",
        content=chunks(),
        headers={"X-Webhook-Secret": secret},
    )
    assert response.status_code == 413
    assert "content-length" not in response.request.headers

    assert target.lookups == []
    assert target.received == []
    assert rejected(metrics, "too_large") == 2


async def test_compressed_body_is_capped_after_decompression(
    http: httpx.AsyncClient, target: DictTarget, metrics: Metrics
) -> None:
    """A small gzip body that inflates past the cap (aiohttp inflates request bodies)."""
    secret = target.add_job(JOB, task_id="t-1")
    bomb = gzip.compress(b'{"id": "t-1", "pad": "' + b"0" * (1024 * 1024) + b'"}')
    assert len(bomb) < MAX_BODY

    response = await post_webhook(
        http, JOB, bomb, {"X-Webhook-Secret": secret, "Content-Encoding": "gzip"}
    )
    assert response.status_code == 413
    assert target.received == []
    assert rejected(metrics, "too_large") == 1


async def test_body_at_the_cap_is_read(http: httpx.AsyncClient, target: DictTarget) -> None:
    secret = target.add_job(JOB, task_id="t-1")
    body = json.dumps({"id": "t-1", "status": "Error", "pad": ""}).encode()
    body = body.replace(b'"pad": ""', b'"pad": "' + b"x" * (MAX_BODY - len(body)) + b'"')
    assert len(body) == MAX_BODY

    response = await post_webhook(http, JOB, body, {"X-Webhook-Secret": secret})
    assert response.status_code == 200
    assert len(target.received) == 1


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"\xff\xfe",
        b"[1, 2, 3]",
        b'{"id": "t-1", "task_id": "t-2", "status": "Ready"}',  # which task?
        b'{"id": 17, "status": "Ready"}',
        b"[" * 2048 + b"]" * 2048,  # nesting deeper than the parser recurses
    ],
)
async def test_unreadable_but_verified_body_is_400(
    http: httpx.AsyncClient, target: DictTarget, metrics: Metrics, body: bytes
) -> None:
    secret = target.add_job(JOB, task_id="t-1")

    response = await post_webhook(http, JOB, body, signed(body, secret))
    assert response.status_code == 400
    assert target.received == []
    assert rejected(metrics, "bad_body") == 1


async def test_unverified_garbage_is_401_not_400(
    http: httpx.AsyncClient, target: DictTarget
) -> None:
    """Authentication comes before parsing: nothing about the body is judged unverified."""
    target.add_job(JOB, task_id="t-1")
    response = await post_webhook(http, JOB, b"not json", {"X-Webhook-Secret": "guess"})
    assert response.status_code == 401
    assert response.text == "401: Unauthorized"


async def test_body_without_any_id_uses_the_jobs_task(
    http: httpx.AsyncClient, target: DictTarget
) -> None:
    secret = target.add_job(JOB, task_id="t-1")
    body = json.dumps({"status": "SUCCESS", "result": {"sample": "https://x/y.jpg"}}).encode()

    response = await post_webhook(http, JOB, body, {"X-Webhook-Secret": secret})
    assert response.status_code == 200
    [(_, task_id, result)] = target.received
    assert task_id == "t-1"
    assert result.outcome is TaskOutcome.READY
    assert result.sample_urls == ("https://x/y.jpg",)


async def test_body_without_any_id_before_the_task_is_known_is_400(
    http: httpx.AsyncClient, target: DictTarget
) -> None:
    secret = target.add_job(JOB)
    body = b'{"status": "Ready", "result": {"sample": "https://x/y.jpg"}}'
    response = await post_webhook(http, JOB, body, {"X-Webhook-Secret": secret})
    assert response.status_code == 400
    assert target.received == []


@pytest.mark.parametrize(
    ("payload", "outcome"),
    [
        ({"task_id": "t-1", "status": "SUCCESS", "result": {"sample": "u"}}, TaskOutcome.READY),
        ({"id": "t-1", "status": "FAILED"}, TaskOutcome.FAILED),
        ({"id": "t-1", "status": "Content Moderated"}, TaskOutcome.MODERATED),
        # Ready without a readable image link: not a failure, the engine polls to confirm.
        ({"id": "t-1", "status": "Ready", "result": {"url": "u"}}, TaskOutcome.UNKNOWN),
        ({"id": "t-1", "status": "Ready", "result": None}, TaskOutcome.UNKNOWN),
        ({"id": "t-1", "status": "Generating", "progress": 0.5}, TaskOutcome.RUNNING),
    ],
)
async def test_bodies_are_parsed_defensively(
    http: httpx.AsyncClient, target: DictTarget, payload: dict[str, Any], outcome: Any
) -> None:
    secret = target.add_job(JOB, task_id="t-1")
    response = await post_webhook(
        http, JOB, json.dumps(payload).encode(), {"X-Webhook-Secret": secret}
    )
    assert response.status_code == 200
    [(_, task_id, result)] = target.received
    assert (task_id, result.outcome) == ("t-1", outcome)


async def test_target_failure_is_500(
    http: httpx.AsyncClient, target: DictTarget, metrics: Metrics
) -> None:
    secret = target.add_job(JOB, task_id="t-1")

    async def broken(job_id: str, task_id: str, result: TaskResult) -> None:
        raise RuntimeError("database is locked")

    target.webhook_result = broken  # type: ignore[method-assign]
    body = b'{"id": "t-1", "status": "Error"}'
    response = await post_webhook(http, JOB, body, {"X-Webhook-Secret": secret})
    assert response.status_code == 500
    assert "locked" not in response.text
    assert sample(metrics, "fluxcord_webhooks_accepted_total") == 0


async def test_lookup_failure_is_500(http: httpx.AsyncClient, target: DictTarget) -> None:
    async def broken(job_id: str) -> WebhookSubscription | None:
        raise RuntimeError("disk I/O error")

    target.webhook_subscription = broken  # type: ignore[method-assign]
    response = await post_webhook(http, JOB, b"{}", {"X-Webhook-Secret": "s"})
    assert response.status_code == 500
    assert response.text == "500: Internal Server Error"
    assert target.received == []


async def test_malformed_job_ids_never_reach_the_target(
    http: httpx.AsyncClient, target: DictTarget
) -> None:
    for path in (f"{WEBHOOK_PATH}/", f"{WEBHOOK_PATH}/a.b", f"{WEBHOOK_PATH}/{'a' * 65}"):
        response = await http.post(path, content=b"{}")
        assert response.status_code == 404, path
    assert (await http.get(f"{WEBHOOK_PATH}/{JOB}")).status_code == 405
    assert target.lookups == []


async def test_receiver_is_off_without_a_target(
    metrics: Metrics, health: HealthState, target: DictTarget
) -> None:
    server = await _serve(metrics, health, None)
    try:
        async with httpx.AsyncClient(base_url=server.url) as http:
            target.add_job(JOB)
            response = await http.post(
                f"{WEBHOOK_PATH}/{tagged_job_id(TAG_KEY, JOB)}", content=b"{}"
            )
            assert response.status_code == 404
            assert (await http.get("/healthz")).status_code == 200
    finally:
        await server.stop()


# --------------------------------------------------------------------------- verification
def test_verify_webhook_forms() -> None:
    secret = "s3cret-" + "x" * 20
    body = b'{"id": "t"}'
    good = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    assert verify_webhook(body, {"X-Webhook-Secret": secret}, secret)
    assert verify_webhook(body, {"X-BFL-Signature": f"sha256={good}"}, secret)
    assert verify_webhook(body, {"X-BFL-Signature": f" SHA256={good.upper()} "}, secret)
    # Either correct form is enough, even next to a wrong one.
    assert verify_webhook(
        body, {"X-Webhook-Secret": "nope", "X-BFL-Signature": f"sha256={good}"}, secret
    )
    for headers in (
        {},
        {"X-Webhook-Secret": ""},
        {"X-Webhook-Secret": secret + " "},
        {"X-Webhook-Secret": secret[:-1]},
        {"X-Webhook-Secret": "s3cret-\udcff"},  # undecodable bytes as aiohttp hands them over
        {"X-BFL-Signature": good},  # no scheme
        {"X-BFL-Signature": f"sha1={good}"},
        {"X-BFL-Signature": "sha256="},
        {"X-BFL-Signature": f"sha256={good[:-1]}"},
        {"X-BFL-Signature": "sha256=" + hmac.new(b"other", body, "sha256").hexdigest()},
        {"X-BFL-Signature": f"sha256={secret}"},
    ):
        assert not verify_webhook(body, headers, secret), headers
    assert not verify_webhook(body + b" ", {"X-BFL-Signature": f"sha256={good}"}, secret)


def test_webhook_url() -> None:
    tag = url_tag(TAG_KEY, "ab12")
    assert len(tag) == 16
    assert webhook_url("https://bot.example.com/", "ab12", key=TAG_KEY) == (
        f"https://bot.example.com/webhooks/bfl/ab12_{tag}"
    )
    assert webhook_url("https://example.com/fluxcord", "ab12", key=TAG_KEY) == (
        f"https://example.com/fluxcord/webhooks/bfl/ab12_{tag}"
    )
    with pytest.raises(ValueError):
        webhook_url("https://example.com/" + "p" * 2100, "ab12", key=TAG_KEY)


def test_only_a_url_the_fleet_gave_out_names_a_job() -> None:
    """A job id alone is public (every button carries one): only the fleet's tag makes it a
    webhook URL, and anything else is refused without looking anything up."""
    assert job_id_from_url(TAG_KEY, f"ab12_{url_tag(TAG_KEY, 'ab12')}") == "ab12"
    assert job_id_from_url(TAG_KEY, "ab12") is None  # untagged: copied from a button
    assert job_id_from_url(TAG_KEY, "ab12_") is None
    assert job_id_from_url(TAG_KEY, f"ab12_{url_tag(TAG_KEY, 'cd34')}") is None
    assert job_id_from_url(bytes(32), f"ab12_{url_tag(TAG_KEY, 'ab12')}") is None
    assert job_id_from_url(None, f"ab12_{url_tag(TAG_KEY, 'ab12')}") is None  # key not read


def test_webhook_task_result_keeps_the_providers_reading() -> None:
    result = webhook_task_result(
        {"id": "t", "status": "Ready", "result": {"sample": "u", "seed": 3}, "cost": 3}
    )
    assert (result.outcome, result.sample_urls, result.seed, result.cost) == (
        TaskOutcome.READY,
        ("u",),
        3,
        3.0,
    )


def test_subscription_repr_hides_the_secret() -> None:
    secret = new_webhook_secret()
    assert len(secret) >= 40
    assert secret not in repr(WebhookSubscription(secret=secret, task_id="t"))
    assert new_webhook_secret() != secret


# --------------------------------------------------------------------------- health
async def test_healthz_ok(http: httpx.AsyncClient) -> None:
    response = await http.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {
        "status": "ok",
        "version": __version__,
        "checks": {"database": "ok", "discord": "ok"},
        "queue_depth": 3,
    }
    assert response.headers["cache-control"] == "no-store"


async def test_healthz_503_when_discord_is_disconnected(
    http: httpx.AsyncClient, health: HealthState
) -> None:
    health.connected = False
    response = await http.get("/healthz")
    assert response.status_code == 503
    assert response.json()["status"] == "unhealthy"
    assert response.json()["checks"] == {"database": "ok", "discord": "disconnected"}


async def test_healthz_503_when_the_database_fails(
    http: httpx.AsyncClient, health: HealthState, tmp_path: Any
) -> None:
    broken = await open_database(tmp_path / "other.sqlite3")
    await broken.close()

    async def closed_db() -> object:
        return await broken.fetch_value("SELECT 1")

    health.ping = closed_db
    response = await http.get("/healthz")
    assert response.status_code == 503
    assert response.json()["checks"] == {"database": "error", "discord": "ok"}
    assert str(tmp_path) not in response.text  # no error texts, no paths


async def test_healthz_503_when_the_database_hangs(metrics: Metrics, health: HealthState) -> None:
    release = asyncio.Event()
    calls = 0

    async def stuck() -> object:
        nonlocal calls
        calls += 1
        await release.wait()
        return 1

    health.ping = stuck
    server = await _serve(metrics, health, None, ping_timeout=0.1)
    try:
        async with httpx.AsyncClient(base_url=server.url) as http:
            for _ in range(2):
                response = await http.get("/healthz")
                assert response.status_code == 503
                assert response.json()["checks"]["database"] == "timeout"
            assert calls == 1  # the hung ping is waited on, not piled onto
            release.set()
            await asyncio.sleep(0)
            assert (await http.get("/healthz")).status_code == 200
    finally:
        await server.stop()


# --------------------------------------------------------------------------- metrics
async def test_metrics_exposition(
    fake_bfl: FakeBFL,
    server: WebServer,
    http: httpx.AsyncClient,
    target: DictTarget,
    metrics: Metrics,
) -> None:
    await submit_job(fake_bfl, server, target)
    await webhooks_sent(fake_bfl, 1)
    await http.post(f"{WEBHOOK_PATH}/{'f' * 16}", content=b"{}")  # unknown: rejected
    metrics.job_state_changed("submitted", "pro")
    metrics.observe_provider_call("bfl", "poll", 0.2)

    response = await http.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }
    assert samples[("fluxcord_webhooks_accepted_total", ())] == 1
    assert samples[("fluxcord_webhooks_rejected_total", (("reason", "unknown_task"),))] == 1
    assert samples[("fluxcord_webhooks_rejected_total", (("reason", "bad_secret"),))] == 0
    assert samples[("fluxcord_queue_depth", ())] == 3
    assert samples[("fluxcord_active_tasks", ())] == 2
    assert samples[("fluxcord_jobs_total", (("state", "submitted"), ("variant", "pro")))] == 1
    key = (("le", "0.25"), ("operation", "poll"), ("provider", "bfl"))
    assert samples[("fluxcord_provider_request_seconds_bucket", key)] == 1
    assert BFL_KEY not in response.text


# --------------------------------------------------------------------------- secrets in logs
async def test_no_secret_ever_appears_in_the_logs(
    caplog: pytest.LogCaptureFixture,
    fake_bfl: FakeBFL,
    server: WebServer,
    http: httpx.AsyncClient,
    target: DictTarget,
) -> None:
    caplog.set_level(logging.DEBUG)
    secrets_used: list[str] = []

    async def one(mode: Any, job_id: str) -> None:
        # The stand-in reads the mode when it sends: wait for this delivery before the next.
        fake_bfl.webhook_mode = mode
        sent = len(fake_bfl.webhook_attempts) + (2 if mode == "duplicate" else 1)
        await submit_job(fake_bfl, server, target, job_id=job_id)
        secrets_used.append(target.subscriptions[job_id].secret)
        await webhooks_sent(fake_bfl, sent)

    await one("secret", "a" * 16)
    await one("hmac", "b" * 16)
    await one("duplicate", "c" * 16)
    await one("wrong_secret", "d" * 16)
    await webhooks_sent(fake_bfl, 5)
    assert [a.status_code for a in fake_bfl.webhook_attempts].count(200) == 4
    # Hand-made failures: bad secret, oversized, unverified garbage, broken body.
    secret = secrets_used[0]
    job = "a" * 16
    await post_webhook(http, job, b"{}", {"X-Webhook-Secret": secret + "x"})
    await post_webhook(http, job, b"x" * (MAX_BODY + 1), {"X-Webhook-Secret": secret})
    await post_webhook(http, job, b"]", {"X-Webhook-Secret": secret})
    await post_webhook(http, "e" * 16, b"{}", {"X-Webhook-Secret": secret})
    await http.get("/healthz")
    await http.get("/metrics")

    records = caplog.records
    assert any(r.name == "aiohttp.access" for r in records), "the access log was not captured"
    assert any(r.name == "bot.operations.web" for r in records)
    everything = [caplog.text]
    for record in records:
        everything += [record.getMessage(), repr(record.args), record.exc_text or ""]
        everything += [repr(value) for value in vars(record).values()]
    blob = "\n".join(everything)
    for secret in (*secrets_used, BFL_KEY):
        assert secret not in blob
    # The HMAC of a body is secret-derived too; it must not be logged either.
    for attempt in fake_bfl.webhook_attempts:
        signature = attempt.headers.get("X-BFL-Signature")
        if signature:
            assert signature.split("=", 1)[1] not in blob


def test_an_empty_secret_verifies_nothing() -> None:
    assert not verify_webhook(b"{}", {"X-Webhook-Secret": ""}, "")
    signature = "sha256=" + hmac.new(b"", b"{}", hashlib.sha256).hexdigest()
    assert not verify_webhook(b"{}", {"X-BFL-Signature": signature}, "")
