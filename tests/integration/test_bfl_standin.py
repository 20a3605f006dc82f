"""Self-tests for the FLUX.2 API stand-in (tests/fakes/bfl_server.py)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import io
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from aiohttp import web
from PIL import Image

from tests.fakes.bfl_server import FakeBFL, Outcome, SubmitFault, key_label

KEY = "test-bfl-key"
LATENCY = 0.05


@pytest.fixture
async def fake() -> AsyncIterator[FakeBFL]:
    async with FakeBFL(api_key=KEY, latency=LATENCY) as server:
        yield server


@pytest.fixture
async def client(fake: FakeBFL) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=fake.base_url, headers={"x-key": KEY}) as http:
        yield http


async def submit(
    client: httpx.AsyncClient, endpoint: str = "flux-2-pro", **body: Any
) -> httpx.Response:
    body.setdefault("prompt", "a red fox")
    return await client.post(f"/v1/{endpoint}", json=body)


async def poll_until_done(
    client: httpx.AsyncClient, url: str, limit: float = 2.0
) -> tuple[dict[str, Any], list[str]]:
    """Poll until a known final status; returns the last payload and all statuses seen."""
    seen: list[str] = []
    deadline = time.monotonic() + limit
    while True:
        response = await client.get(url)
        assert response.status_code == 200, response.text
        payload: dict[str, Any] = response.json()
        seen.append(payload["status"])
        if payload["status"] not in ("Pending", "Reasoning", "Generating", "Thinking"):
            return payload, seen
        assert time.monotonic() < deadline, seen
        await asyncio.sleep(0.01)


def png_b64(size: tuple[int, int] = (1024, 1024)) -> str:
    buf = io.BytesIO()
    Image.new("RGB", size, (10, 20, 30)).save(buf, "PNG")
    return base64.b64encode(buf.getvalue()).decode()


# --------------------------------------------------------------------------- auth


async def test_auth_missing_and_wrong_key(fake: FakeBFL) -> None:
    async with httpx.AsyncClient(base_url=fake.base_url) as anon:
        for method, path in (
            ("POST", "/v1/flux-2-pro"),
            ("GET", "/v1/get_result?id=x"),
            ("GET", "/v1/credits"),
        ):
            body = {"prompt": "p"} if method == "POST" else None
            missing = await anon.request(method, path, json=body)
            assert missing.status_code == 403
            assert missing.json() == {"detail": "Not authenticated"}
            wrong = await anon.request(method, path, json=body, headers={"x-key": "nope"})
            assert wrong.status_code == 401
            assert wrong.json() == {"detail": "Invalid API key"}
    assert not fake.tasks
    assert [s.status for s in fake.submissions] == [403, 401]


async def test_unknown_route_is_json_404(client: httpx.AsyncClient) -> None:
    response = await submit(client, "flux-2-dev")
    assert response.status_code == 404
    assert response.json() == {"detail": "Not Found"}


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("endpoint", "body", "loc", "type_"),
    [
        ("flux-2-pro", {"width": 100, "height": 1024}, ["body", "width"], "multiple_of"),
        ("flux-2-pro", {"width": 32}, ["body", "width"], "greater_than_equal"),
        ("flux-2-pro", {"width": 4096, "height": 2048}, ["body"], "value_error"),
        ("flux-2-flex", {"steps": 0}, ["body", "steps"], "greater_than_equal"),
        ("flux-2-flex", {"guidance": 11}, ["body", "guidance"], "less_than_equal"),
        ("flux-2-pro", {"safety_tolerance": 6}, ["body", "safety_tolerance"], "less_than_equal"),
        ("flux-2-pro", {"output_format": "gif"}, ["body", "output_format"], "enum"),
        ("flux-2-pro", {"prompt": ""}, ["body", "prompt"], "string_too_short"),
        ("flux-2-pro", {"input_image": "not base64!"}, ["body", "input_image"], "value_error"),
        ("flux-2-pro", {"disable_pup": "yes"}, ["body", "disable_pup"], "bool_type"),
        ("flux-2-pro", {"user": "u" * 257}, ["body", "user"], "string_too_long"),
        ("flux-2-pro", {"webhook_url": "x" * 2084}, ["body", "webhook_url"], "string_too_long"),
    ],
)
async def test_validation_errors(
    client: httpx.AsyncClient,
    fake: FakeBFL,
    endpoint: str,
    body: dict[str, Any],
    loc: list[str],
    type_: str,
) -> None:
    response = await submit(client, endpoint, **body)
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert len(detail) == 1
    assert detail[0]["loc"] == loc
    assert detail[0]["type"] == type_
    assert isinstance(detail[0]["msg"], str)
    assert not fake.tasks


async def test_validation_reports_every_problem_and_missing_prompt(
    client: httpx.AsyncClient,
) -> None:
    response = await client.post("/v1/flux-2-flex", json={"width": 100, "steps": 51, "seed": "x"})
    assert response.status_code == 422
    locs = [tuple(item["loc"]) for item in response.json()["detail"]]
    assert locs == [("body", "prompt"), ("body", "width"), ("body", "seed"), ("body", "steps")]
    bad_json = await client.post(
        "/v1/flux-2-pro", content=b"{nope", headers={"content-type": "application/json"}
    )
    assert bad_json.status_code == 422
    assert bad_json.json()["detail"][0]["type"] == "json_invalid"


async def test_unknown_fields_ignored_but_recorded(
    client: httpx.AsyncClient, fake: FakeBFL
) -> None:
    # steps is flex-only and input_image_5 is unknown to klein: both silently ignored.
    pro = await submit(client, "flux-2-pro", steps=0, sede=3)
    klein = await submit(client, "flux-2-klein-4b", input_image_5="garbage")
    assert pro.status_code == klein.status_code == 200
    assert fake.submissions[0].ignored_fields == ("steps", "sede")
    assert fake.submissions[1].ignored_fields == ("input_image_5",)
    assert fake.submissions[1].body == {"prompt": "a red fox", "input_image_5": "garbage"}
    bad_on_pro = await submit(client, "flux-2-pro", input_image_5="garbage")
    assert bad_on_pro.status_code == 422


# --------------------------------------------------------------------------- happy path


@pytest.mark.parametrize(
    ("fmt", "content_type"),
    [(None, "image/jpeg"), ("png", "image/png"), ("webp", "image/webp")],
)
async def test_submit_poll_download(
    client: httpx.AsyncClient, fake: FakeBFL, fmt: str | None, content_type: str
) -> None:
    extra = {} if fmt is None else {"output_format": fmt}
    response = await submit(client, seed=1234, width=1024, height=1024, **extra)
    assert response.status_code == 200
    sub = response.json()
    assert set(sub) == {"id", "polling_url", "cost", "input_mp", "output_mp"}
    assert "/v1/poll/" in sub["polling_url"] and "/v1/get_result" not in sub["polling_url"]
    assert sub["cost"] == 3.0 and sub["output_mp"] == 1.0 and sub["input_mp"] == 0.0

    payload, seen = await poll_until_done(client, sub["polling_url"])
    assert seen[0] == "Pending" and seen[-1] == "Ready"
    assert set(seen) <= {"Pending", "Generating", "Ready"}
    result = payload["result"]
    assert result["seed"] == 1234 and result["prompt"] == "a red fox"
    assert result["end_time"] >= result["start_time"]
    assert payload["progress"] == 1.0 and payload["cost"] == 3.0

    async with httpx.AsyncClient() as anon:  # delivery needs no key
        image = await anon.get(result["sample"])
    assert image.status_code == 200
    assert image.headers["content-type"] == content_type
    assert image.content == fake.image_bytes(sub["id"])
    with Image.open(io.BytesIO(image.content)) as img:
        assert img.size == (32, 32)
        assert img.format == {"image/jpeg": "JPEG", "image/png": "PNG"}.get(content_type, "WEBP")

    task = fake.tasks[sub["id"]]
    assert task.status == "Ready" and task.seed == 1234 and task.polls == len(seen)
    assert fake.poll_count == len(seen)


async def test_get_result_fallback_and_task_not_found(
    client: httpx.AsyncClient, fake: FakeBFL
) -> None:
    sub = (await submit(client)).json()
    payload, _ = await poll_until_done(client, f"/v1/get_result?id={sub['id']}")
    via_polling_url = (await client.get(sub["polling_url"])).json()
    assert payload == via_polling_url
    assert payload["status"] == "Ready"
    assert isinstance(payload["result"]["seed"], int)  # random seed when none was sent

    missing = await client.get("/v1/get_result?id=nope")
    assert missing.status_code == 200
    assert missing.json() == {"id": "nope", "status": "Task not found"}
    bad_token = await client.get(sub["polling_url"].split("?")[0] + "?token=forged")
    assert bad_token.status_code == 403


async def test_images_are_distinct_and_deterministic(
    client: httpx.AsyncClient, fake: FakeBFL
) -> None:
    ids = [(await submit(client, seed=7)).json()["id"] for _ in range(3)]
    images = [fake.image_bytes(task_id) for task_id in ids]
    assert len(set(images)) == 3
    assert images[0] is fake.image_bytes(ids[0])


# --------------------------------------------------------------------------- concurrency


async def test_429_when_max_active_then_free_after_latency(
    client: httpx.AsyncClient, fake: FakeBFL
) -> None:
    fake.max_active = 2
    fake.latency = 0.25  # generous, so that a slow CI cannot free a slot early
    assert [(await submit(client)).status_code for _ in range(2)] == [200, 200]
    rejected = await submit(client)
    assert rejected.status_code == 429
    assert "active tasks" in rejected.json()["detail"]
    assert "retry-after" not in rejected.headers
    fake.retry_after = 3
    rejected = await submit(client)
    assert rejected.status_code == 429 and rejected.headers["retry-after"] == "3"
    assert fake.active_count() == 2
    await asyncio.sleep(0.27)
    assert fake.active_count() == 0
    assert (await submit(client)).status_code == 200
    assert fake.max_active_seen == 2 and fake.rejected_429 == 2


# --------------------------------------------------------------------------- several API keys

KEY_A = "key-a-secret-0001"
KEY_B = "key-b-secret-0002"
SLOW = 0.3  # generous, so that a slow CI cannot free a slot mid-test


@pytest.fixture
async def two_keys() -> AsyncIterator[tuple[FakeBFL, httpx.AsyncClient, httpx.AsyncClient]]:
    """A fake with two accounts (caps 2 and 3), and one client per key."""
    async with (
        FakeBFL(api_keys={KEY_A: 2, KEY_B: 3}, latency=SLOW) as server,
        httpx.AsyncClient(base_url=server.base_url, headers={"x-key": KEY_A}) as as_a,
        httpx.AsyncClient(base_url=server.base_url, headers={"x-key": KEY_B}) as as_b,
    ):
        yield server, as_a, as_b


async def statuses(client: httpx.AsyncClient, count: int) -> list[int]:
    return [(await submit(client)).status_code for _ in range(count)]


async def test_caps_are_independent_per_key(
    two_keys: tuple[FakeBFL, httpx.AsyncClient, httpx.AsyncClient],
) -> None:
    fake, as_a, as_b = two_keys
    assert await statuses(as_a, 3) == [200, 200, 429]
    # key-a is full; key-b still gets its own three slots, then only key-b is refused.
    assert await statuses(as_b, 4) == [200, 200, 200, 429]
    assert await statuses(as_a, 1) == [429]
    refused = await submit(as_b)
    assert refused.status_code == 429 and "active tasks" in refused.json()["detail"]

    assert (fake.active_count(KEY_A), fake.active_count(KEY_B), fake.active_count()) == (2, 3, 5)
    assert fake.rejected_429_by_key == {KEY_A: 2, KEY_B: 2}
    assert fake.submits_by_key == {KEY_A: 4, KEY_B: 5}
    assert fake.max_active_seen_by_key == {KEY_A: 2, KEY_B: 3}
    # The totals still cover every key; the peak is of all tasks together.
    assert fake.rejected_429 == 4 and fake.max_active_seen == 5
    assert len(fake.tasks_of(KEY_A)) == 2 and len(fake.tasks_of(KEY_B)) == 3
    assert {task.owner_key for task in fake.tasks.values()} == {KEY_A, KEY_B}

    await asyncio.sleep(SLOW + 0.03)
    assert fake.active_count() == 0
    assert await statuses(as_a, 1) == [200]
    assert fake.active_count(KEY_A) == 1 and fake.active_count(KEY_B) == 0


async def test_cap_changes_at_run_time(
    two_keys: tuple[FakeBFL, httpx.AsyncClient, httpx.AsyncClient],
) -> None:
    fake, as_a, as_b = two_keys
    assert await statuses(as_b, 2) == [200, 200]
    fake.set_cap(KEY_B, 1)  # below what is running: those go on, new submits wait
    assert await statuses(as_b, 1) == [429]
    assert fake.active_count(KEY_B) == 2
    fake.set_cap(KEY_B, 4)
    assert await statuses(as_b, 3) == [200, 200, 429]
    fake.set_cap(KEY_A, 0)  # an account that may not run anything
    assert await statuses(as_a, 1) == [429]
    assert fake.caps == {KEY_A: 0, KEY_B: 4}
    assert fake.rejected_429_by_key == {KEY_A: 1, KEY_B: 2}
    with pytest.raises(KeyError):
        fake.set_cap("key-c", 3)
    with pytest.raises(ValueError, match="cap"):
        fake.set_cap(KEY_A, -1)


async def test_task_cannot_be_polled_with_another_key(
    two_keys: tuple[FakeBFL, httpx.AsyncClient, httpx.AsyncClient],
) -> None:
    fake, as_a, as_b = two_keys
    fake.latency = 0.0
    sub = (await submit(as_a)).json()
    task_id, polling_url = sub["id"], sub["polling_url"]
    unknown = {"id": task_id, "status": "Task not found"}
    for url in (polling_url, f"/v1/get_result?id={task_id}"):
        foreign = await as_b.get(url)
        # Exactly what an unknown task answers: nothing leaks about key-a's task.
        assert foreign.status_code == 200 and foreign.json() == unknown
        own = await as_a.get(url)
        assert own.status_code == 200 and own.json()["status"] == "Ready"
    # Another account with a wrong token too: still "not found", not a 403 that would
    # confirm the task exists.
    bad_token = polling_url.split("?")[0] + "?token=wrong"
    assert (await as_b.get(bad_token)).json() == unknown
    assert (await as_a.get(bad_token)).status_code == 403

    assert fake.tasks[task_id].polls == 2  # only key-a's polls count for the task
    assert fake.wrong_key_polls == 3 and fake.poll_count == 6
    assert fake.tasks_of(KEY_B) == []


async def test_keys_never_echoed_and_never_printed(
    two_keys: tuple[FakeBFL, httpx.AsyncClient, httpx.AsyncClient],
) -> None:
    fake, as_a, _ = two_keys
    typo = KEY_A + "x"
    wrong = await as_a.post("/v1/flux-2-pro", json={"prompt": "p"}, headers={"x-key": typo})
    assert wrong.status_code == 401 and wrong.json() == {"detail": "Invalid API key"}
    accepted = await submit(as_a)
    task = fake.tasks[accepted.json()["id"]]
    printed = [wrong.text, accepted.text, repr(task), repr(fake.submissions[-1])]
    with pytest.raises(KeyError) as unknown_key:
        fake.set_cap(typo, 1)
    printed.append(str(unknown_key.value))
    with pytest.raises(RuntimeError) as ambiguous:
        _ = fake.max_active
    printed.append(str(ambiguous.value))
    for text in printed:
        assert KEY_A not in text and KEY_B not in text, text
    assert fake.submissions[-1].key_label == key_label(KEY_A) == task.owner_label
    assert fake.submissions[-2].key_label is None  # the rejected key is not recorded as one
    assert str(unknown_key.value).count(key_label(typo)) == 1


async def test_keys_added_and_revoked_at_run_time(
    two_keys: tuple[FakeBFL, httpx.AsyncClient, httpx.AsyncClient],
) -> None:
    fake, _, as_b = two_keys
    fake.latency = 0.0
    sub = (await submit(as_b)).json()
    fake.remove_key(KEY_B)
    assert (await submit(as_b)).status_code == 401
    assert (await as_b.get(sub["polling_url"])).status_code == 401
    assert fake.api_keys == (KEY_A,) and fake.submits_by_key[KEY_B] == 1
    fake.add_key(KEY_B, 1)
    assert (await as_b.get(sub["polling_url"])).json()["status"] == "Ready"  # still its task
    assert fake.submits_by_key[KEY_B] == 1  # history kept across the revocation
    with pytest.raises(ValueError, match="already present"):
        fake.add_key(KEY_A)


async def test_injected_429_counts_for_the_submitting_key(
    two_keys: tuple[FakeBFL, httpx.AsyncClient, httpx.AsyncClient],
) -> None:
    fake, _, as_b = two_keys
    fake.submit_faults.append(SubmitFault(status=429, create_task=False))
    assert await statuses(as_b, 2) == [429, 200]
    assert fake.rejected_429_by_key == {KEY_A: 0, KEY_B: 1} and fake.rejected_429 == 1


async def test_single_key_forms_keep_working() -> None:
    async with FakeBFL() as default, FakeBFL(api_key="k", max_active=2) as custom:
        assert default.api_key == "test-bfl-key" and default.max_active == 24
        assert default.caps == {"test-bfl-key": 24}
        custom.max_active = 5
        assert custom.caps == {"k": 5} and custom.max_active == 5
        assert custom.api_keys == ("k",)
    with pytest.raises(ValueError):
        FakeBFL(api_key="k", api_keys={"other": 1})
    with pytest.raises(ValueError):
        FakeBFL(api_keys={"a": 1}, max_active=3)
    with pytest.raises(ValueError):
        FakeBFL(api_keys={})
    several = FakeBFL(api_keys={"a": 1, "b": 2})
    with pytest.raises(RuntimeError):
        _ = several.api_key
    with pytest.raises(RuntimeError):
        several.max_active = 3
    assert several.caps == {"a": 1, "b": 2}


# --------------------------------------------------------------------------- scripted outcomes


@pytest.mark.parametrize(
    ("final", "has_reasons"),
    [("Request Moderated", True), ("Content Moderated", True), ("Error", False)],
)
async def test_scripted_failures_are_refunded(
    client: httpx.AsyncClient, fake: FakeBFL, final: str, has_reasons: bool
) -> None:
    fake.credits = 10.0
    fake.script("bad", Outcome(final_status=final, latency=0.15))
    sub = (await submit(client, prompt="bad")).json()
    assert fake.credits == 7.0
    payload, _ = await poll_until_done(client, sub["polling_url"])
    assert payload["status"] == final and payload["result"] is None
    assert ("moderation_reasons" in payload["details"]) is has_reasons
    assert fake.credits == 10.0
    assert (await client.get("/v1/credits")).json() == {"credits": 10.0}


async def test_running_statuses_in_order_including_new_ones(
    client: httpx.AsyncClient, fake: FakeBFL
) -> None:
    running = ("Pending", "Reasoning", "Thinking", "Generating")
    fake.script("slow", Outcome(running_statuses=running, latency=0.3, details={"k": 1}))
    sub = (await submit(client, prompt="slow")).json()
    payload, seen = await poll_until_done(client, sub["polling_url"])
    order = list(dict.fromkeys(seen))
    assert order == [*running, "Ready"]
    assert payload["details"] == {"k": 1}


async def test_unknown_final_status_is_reported_forever(
    client: httpx.AsyncClient, fake: FakeBFL
) -> None:
    fake.script("weird", Outcome(final_status="Queued-Weird", latency=0.0))
    sub = (await submit(client, prompt="weird")).json()
    for _ in range(3):
        payload = (await client.get(sub["polling_url"])).json()
        assert payload["status"] == "Queued-Weird" and payload["progress"] is None
        await asyncio.sleep(0.02)
    assert fake.active_count() == 0


# --------------------------------------------------------------------------- delivery expiry


async def test_delivery_url_expires() -> None:
    async with (
        FakeBFL(api_key=KEY, latency=0.01, result_ttl=0.2) as fake,
        httpx.AsyncClient(headers={"x-key": KEY}) as client,
    ):
        sub = (await client.post(f"{fake.base_url}/v1/flux-2-max", json={"prompt": "p"})).json()
        payload, _ = await poll_until_done(client, sub["polling_url"])
        sample = payload["result"]["sample"]
        assert (await client.get(sample)).status_code == 200
        forged = await client.get(sample.split("&sig=")[0] + "&sig=forged")
        assert forged.status_code == 403
        await asyncio.sleep(0.25)
        expired = await client.get(sample)
        assert expired.status_code == 403
        assert "<Code>AccessDenied</Code>" in expired.text


# --------------------------------------------------------------------------- faults


async def test_submit_fault_with_created_task_is_billed(
    client: httpx.AsyncClient, fake: FakeBFL
) -> None:
    fake.submit_faults.append(SubmitFault(status=500, create_task=True))
    fake.submit_faults.append(SubmitFault(status=502, create_task=False))
    fake.submit_faults.append(SubmitFault(status=503, create_task=False))
    first = await submit(client, prompt="ghost")
    assert first.status_code == 500
    assert len(fake.tasks) == 1
    ghost = next(iter(fake.tasks.values()))
    assert fake.submissions[0].task_id == ghost.id
    assert fake.credits == 10_000.0 - 3.0
    second = await submit(client)
    assert second.status_code == 502 and "Bad Gateway" in second.text
    third = await submit(client)
    assert third.status_code == 503 and third.json() == {"detail": "Service overloaded"}
    assert len(fake.tasks) == 1
    assert (await submit(client)).status_code == 200  # faults consumed
    await asyncio.sleep(LATENCY + 0.02)
    assert ghost.status == "Ready"


async def test_submit_fault_delay_acts_as_read_timeout(
    client: httpx.AsyncClient, fake: FakeBFL
) -> None:
    fake.submit_faults.append(SubmitFault(status=500, create_task=True, delay=1.0))
    with pytest.raises(httpx.ReadTimeout):
        await client.post("/v1/flux-2-pro", json={"prompt": "p"}, timeout=0.1)
    assert len(fake.tasks) == 1  # the task exists although the client saw no answer


async def test_poll_faults(client: httpx.AsyncClient, fake: FakeBFL) -> None:
    sub = (await submit(client)).json()
    fake.poll_faults.extend([500, 503])
    assert (await client.get(sub["polling_url"])).status_code == 500
    assert (await client.get(sub["polling_url"])).status_code == 503
    assert (await client.get(sub["polling_url"])).status_code == 200


# --------------------------------------------------------------------------- credits


async def test_credits_402_and_pricing(client: httpx.AsyncClient, fake: FakeBFL) -> None:
    fake.credits = 20.0
    # pro, 2 MP out + 1 MP base64 input: 3 + 1.5 + 1.5
    edit = await submit(client, width=2048, height=1024, input_image=png_b64())
    assert edit.status_code == 200
    assert edit.json()["cost"] == 6.0 and edit.json()["input_mp"] == 1.0
    klein = await submit(client, "flux-2-klein-4b", width=512, height=512)
    assert klein.json()["cost"] == 1.4  # minimum is the first-MP price
    url_input = await submit(client, "flux-2-flex", input_image="https://example.com/a.png")
    assert url_input.json()["cost"] == 5.0 and url_input.json()["input_mp"] == 0.0
    assert fake.credits == pytest.approx(20.0 - 6.0 - 1.4 - 5.0)
    fake.credits = 2.0
    broke = await submit(client)
    assert broke.status_code == 402 and broke.json() == {"detail": "Insufficient credits"}
    assert (await client.get("/v1/credits")).json() == {"credits": 2.0}


# --------------------------------------------------------------------------- webhooks


class Receiver:
    """A tiny webhook endpoint collecting what it receives."""

    def __init__(self) -> None:
        self.calls: list[tuple[dict[str, str], bytes]] = []
        self.runner: web.AppRunner | None = None
        self.url = ""
        self.arrived = asyncio.Condition()

    async def handle(self, request: web.Request) -> web.Response:
        self.calls.append((dict(request.headers), await request.read()))
        async with self.arrived:
            self.arrived.notify_all()
        return web.json_response({"ok": True})

    async def wait_calls(self, count: int, limit: float = 1.0) -> None:
        async with asyncio.timeout(limit), self.arrived:
            await self.arrived.wait_for(lambda: len(self.calls) >= count)

    async def __aenter__(self) -> Receiver:
        app = web.Application()
        app.router.add_post("/hook", self.handle)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        host, port = self.runner.addresses[0][:2]
        self.url = f"http://{host}:{port}/hook"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.runner is not None
        await self.runner.cleanup()


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async with Receiver() as rec:
        yield rec


async def test_webhook_submit_response_shape(
    client: httpx.AsyncClient, fake: FakeBFL, receiver: Receiver
) -> None:
    body = (await submit(client, webhook_url=receiver.url)).json()
    assert body["status"] == "Pending" and body["webhook_url"] == receiver.url
    assert "polling_url" not in body
    fake.webhook_responses_include_polling_url = True
    assert "polling_url" in (await submit(client, webhook_url=receiver.url)).json()


@pytest.mark.parametrize("mode", ["secret", "hmac", "both", "duplicate", "drop", "wrong_secret"])
async def test_webhook_modes(
    client: httpx.AsyncClient, fake: FakeBFL, receiver: Receiver, mode: str
) -> None:
    fake.webhook_mode = mode  # type: ignore[assignment]
    sub = (await submit(client, webhook_url=receiver.url, webhook_secret="s3cret")).json()
    expected_calls = {"drop": 0, "duplicate": 2}.get(mode, 1)
    await receiver.wait_calls(expected_calls)
    # Nothing more arrives (for "drop": nothing at all, even after the latency).
    await asyncio.sleep(LATENCY + 0.03 if mode == "drop" else 0.03)
    assert len(receiver.calls) == expected_calls
    assert len(fake.webhook_attempts) == expected_calls
    assert all(a.status_code == 200 and a.url == receiver.url for a in fake.webhook_attempts)
    for headers, raw in receiver.calls:
        payload = json.loads(raw)
        assert payload["id"] == payload["task_id"] == sub["id"]
        assert payload["status"] == "Ready" and payload["progress"] == 1
        assert payload["result"]["sample"].startswith(fake.base_url)
        secret_header = headers.get("X-Webhook-Secret")
        signature = headers.get("X-BFL-Signature")
        good_sig = "sha256=" + hmac.new(b"s3cret", raw, hashlib.sha256).hexdigest()
        if mode in ("secret", "duplicate"):
            assert secret_header == "s3cret" and signature is None
        elif mode == "hmac":
            assert secret_header is None and signature == good_sig
        elif mode == "both":
            assert secret_header == "s3cret" and signature == good_sig
        else:  # wrong_secret
            assert secret_header not in (None, "s3cret")
            assert signature is not None and signature != good_sig


async def test_webhook_failure_recorded_and_pending_cancelled_on_close(
    receiver: Receiver,
) -> None:
    async with FakeBFL(api_key=KEY, latency=0.0) as fake, httpx.AsyncClient() as client:
        fake.script("later", Outcome(latency=30.0))
        headers = {"x-key": KEY}
        url = f"{fake.base_url}/v1/flux-2-pro"
        dead = "http://127.0.0.1:9/hook"  # discard port: connection refused
        await client.post(url, json={"prompt": "p", "webhook_url": dead}, headers=headers)
        await client.post(
            url, json={"prompt": "later", "webhook_url": receiver.url}, headers=headers
        )
        await asyncio.sleep(0.1)
        assert len(fake.webhook_attempts) == 1
        assert fake.webhook_attempts[0].status_code is None
        assert fake.webhook_attempts[0].error
    assert not receiver.calls  # the 30 s one was cancelled by close()


# --------------------------------------------------------------------------- hold / release


async def test_held_tasks_stay_running_until_released_then_run_their_latency(
    client: httpx.AsyncClient, fake: FakeBFL, receiver: Receiver
) -> None:
    fake.max_active = 2
    before = (await submit(client, prompt="before the hold")).json()
    fake.hold()
    during = (await submit(client, prompt="during the hold", webhook_url=receiver.url)).json()
    assert fake.held
    # Well past the latency: nothing ended, no slot freed, no webhook sent.
    await asyncio.sleep(LATENCY * 4)
    statuses = [(await client.get(f"/v1/get_result?id={t['id']}")).json() for t in (before, during)]
    assert [s["status"] for s in statuses] == ["Pending", "Pending"]
    assert fake.active_count() == 2
    assert (await submit(client, prompt="no room")).status_code == 429
    assert receiver.calls == []

    released_at = time.monotonic()
    fake.release()
    assert not fake.held
    await receiver.wait_calls(1)
    payload, _ = await poll_until_done(client, before["polling_url"])
    assert payload["status"] == "Ready" and fake.active_count() == 0
    # The task created while held ran its whole latency after the release.
    assert fake.webhook_attempts[0].sent_at - released_at >= LATENCY
