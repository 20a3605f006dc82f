"""Self-tests for the AI/ML API stand-in (tests/fakes/aiml_server.py): its documented contract."""

from __future__ import annotations

import asyncio
import base64
import io
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from PIL import Image

from tests.fakes.aiml_server import API_PATH, BALANCE_PATH, MODELS, FakeAIML, Fault

KEY = "test-aiml-key-0123"
DEV = "blackforestlabs/flux-2"
EDIT = "blackforestlabs/flux-2-edit"
LORA = "blackforestlabs/flux-2-lora"
LORA_EDIT = "blackforestlabs/flux-2-lora-edit"
PRO = "blackforestlabs/flux-2-pro"
PRO_EDIT = "blackforestlabs/flux-2-pro-edit"
REF_URL = "https://example.com/ref.png"
ERROR_KEYS = {"message", "path", "requestId", "statusCode", "timestamp"}


@pytest.fixture
async def fake() -> AsyncIterator[FakeAIML]:
    async with FakeAIML(api_key=KEY, latency=0.01) as server:
        yield server


@pytest.fixture
async def client(fake: FakeAIML) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        base_url=fake.base_url, headers={"Authorization": f"Bearer {KEY}"}
    ) as http:
        yield http


def png_b64(size: tuple[int, int] = (64, 48)) -> str:
    buf = io.BytesIO()
    Image.new("RGB", size, (10, 20, 30)).save(buf, "PNG")
    return base64.b64encode(buf.getvalue()).decode()


def body_for(model: str, /, **fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"model": model, "prompt": "a red fox"}
    if model.endswith("-edit"):
        body["image_urls"] = [REF_URL]
    body.update(fields)
    return {k: v for k, v in body.items() if v is not None}


async def generate(client: httpx.AsyncClient, model: str = DEV, /, **fields: Any) -> httpx.Response:
    return await client.post(API_PATH, json=body_for(model, **fields))


def assert_error_body(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    payload: dict[str, Any] = response.json()
    assert set(payload) == ERROR_KEYS
    assert payload["statusCode"] == status and payload["path"] == API_PATH
    assert isinstance(payload["requestId"], str) and payload["timestamp"].endswith("Z")
    return payload


# --------------------------------------------------------------------------- auth and routing


async def test_missing_wrong_or_non_bearer_key_is_401(fake: FakeAIML) -> None:
    async with httpx.AsyncClient(base_url=fake.base_url) as anon:
        for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": f"Basic {KEY}"}):
            response = await anon.post(API_PATH, json=body_for(DEV), headers=headers)
            assert_error_body(response, 401)
    assert [r.status for r in fake.requests] == [401, 401, 401]
    assert fake.credits_spent == 0


async def test_unknown_route_answers_the_error_body(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/models/flux")
    assert response.status_code == 404
    assert response.json()["message"] == "Cannot GET /v1/models/flux"


# --------------------------------------------------------------------------- success


@pytest.mark.parametrize("model", list(MODELS))
async def test_each_model_answers_urls_with_exact_bytes(
    client: httpx.AsyncClient, fake: FakeAIML, model: str
) -> None:
    pro = MODELS[model].family == "pro"
    extra: dict[str, Any] = {"safety_tolerance": "5"} if pro else {"num_images": 2}
    response = await generate(client, model, seed=7, output_format="webp", **extra)
    assert response.status_code == 200, response.text
    payload = response.json()
    assert set(payload) == {"data", "meta"}
    count = 1 if pro else 2
    assert len(payload["data"]) == count
    assert payload["meta"] == {"usage": {"credits_used": fake.requests[0].credits_charged}}
    assert fake.requests[0].credits_charged > 0
    async with httpx.AsyncClient() as anon:  # the CDN needs no key
        for n, item in enumerate(payload["data"]):
            assert item["b64_json"] is None
            assert item["url"].startswith(fake.cdn_base_url + "/files/")
            image = await anon.get(item["url"])
            assert image.status_code == 200
            assert image.headers["content-type"] == "image/webp"
            assert image.content == fake.image_bytes(0, n)
    assert len({fake.image_bytes(0, n) for n in range(count)}) == count
    record = fake.requests[0]
    assert record.model == model and record.status == 200 and record.image_count == count
    assert record.body == body_for(model, seed=7, output_format="webp", **extra)
    assert record.headers["authorization"] == f"Bearer {KEY}"
    assert record.ignored_fields == ()


async def test_base64_mode_and_usage_field_knobs(client: httpx.AsyncClient, fake: FakeAIML) -> None:
    fake.result_mode = "b64_json"
    fake.usage_field = "tokens_used"
    payload = (await generate(client, num_images=3)).json()
    assert [base64.b64decode(i["b64_json"]) for i in payload["data"]] == [
        fake.image_bytes(0, n) for n in range(3)
    ]
    assert all(item["url"] is None for item in payload["data"])
    assert payload["meta"] == {"usage": {"tokens_used": fake.requests[0].credits_charged}}
    with Image.open(io.BytesIO(fake.image_bytes(0, 0))) as img:
        assert img.format == "PNG" and img.size == (32, 32)  # png is the documented default
    fake.usage_field = None
    assert "meta" not in (await generate(client)).json()


async def test_pricing_matches_the_documented_pro_example(
    client: httpx.AsyncClient, fake: FakeAIML
) -> None:
    # The flux-2-pro page: a 1472×512 image reported 63,000 (= $0.0315).
    payload = (await generate(client, PRO, image_size={"width": 1472, "height": 512})).json()
    assert payload["meta"]["usage"]["credits_used"] == 63_000
    # Two 1 MP images of dev: 2 × $0.0126.
    two = (await generate(client, image_size="square_hd", num_images=2)).json()
    assert two["meta"]["usage"]["credits_used"] == 50_400
    assert fake.credits_spent == 113_400


async def test_base64_and_data_url_references_are_accepted_and_billed(
    client: httpx.AsyncClient, fake: FakeAIML
) -> None:
    raw = png_b64((1024, 1024))
    refs = [raw, f"data:image/png;base64,{raw}", REF_URL]
    response = await generate(client, PRO_EDIT, image_urls=refs, image_size="square_hd")
    assert response.status_code == 200, response.text
    # $0.0315 for the output + 3 input MP × $0.01575 (the URL counts as 1 MP)
    assert fake.requests[0].credits_charged == round((0.0315 + 3 * 0.01575) * 2_000_000)


# --------------------------------------------------------------------------- validation

CASES: list[tuple[str, dict[str, Any], str]] = [
    (DEV, {"prompt": None}, "prompt: is required"),
    (DEV, {"prompt": "   "}, "prompt: should not be empty"),
    (DEV, {"prompt": "x" * 4001}, "prompt: must be at most 4000 characters"),
    (DEV, {"prompt": 5}, "prompt: must be a string"),
    (DEV, {"model": "blackforestlabs/flux-3"}, "model: must be one of"),
    (DEV, {"image_size": "huge"}, "image_size: must be one of"),
    (DEV, {"image_size": [1024, 1024]}, "image_size: must be a preset name or an object"),
    (DEV, {"image_size": {"width": 480, "height": 512}}, "image_size.width: must be between"),
    (DEV, {"image_size": {"width": 1024, "height": 2080}}, "image_size.height: must be between"),
    (DEV, {"image_size": {"width": 1000}}, "image_size.width: must be a multiple of 32"),
    (DEV, {"image_size": {"height": "768"}}, "image_size.height: must be an integer"),
    (DEV, {"num_images": 0}, "num_images: must be between 1 and 4"),
    (LORA, {"num_images": 5}, "num_images: must be between 1 and 4"),
    (EDIT, {"num_images": 2.5}, "num_images: must be a whole number"),
    (DEV, {"guidance_scale": 20.5}, "guidance_scale: must be between 0 and 20"),
    (LORA_EDIT, {"guidance_scale": "7"}, "guidance_scale: must be a number"),
    (DEV, {"num_inference_steps": 3}, "num_inference_steps: must be between 4 and 50"),
    (DEV, {"num_inference_steps": 28.0}, "num_inference_steps: must be an integer"),
    (DEV, {"acceleration": "turbo"}, "acceleration: must be one of: none, regular, high"),
    (DEV, {"enable_prompt_expansion": "yes"}, "enable_prompt_expansion: must be a boolean"),
    (PRO, {"enable_safety_checker": 1}, "enable_safety_checker: must be a boolean"),
    (DEV, {"seed": 0}, "seed: must be greater than or equal to 1"),
    (PRO, {"seed": "12"}, "seed: must be an integer"),
    (PRO, {"output_format": "gif"}, "output_format: must be one of: jpeg, png, webp"),
    (LORA, {"loras": [{"path": "a/b"}] * 4}, "loras: must contain at most 3 items"),
    (LORA, {"loras": [{"scale": 1}]}, "loras[0].path: is required"),
    (LORA, {"loras": [{"path": "a/b"}, {"path": "c/d", "scale": 4.5}]}, "loras[1].scale: must"),
    (LORA_EDIT, {"loras": {"path": "a/b"}}, "loras: must be an array"),
    (PRO, {"safety_tolerance": 2}, 'safety_tolerance: must be a string, one of "1" to "6"'),
    (PRO_EDIT, {"safety_tolerance": "7"}, 'safety_tolerance: must be one of "1" to "6"'),
    (EDIT, {"image_urls": None}, "image_urls: is required"),
    (LORA_EDIT, {"image_urls": []}, "image_urls: must contain 1 to 3 items"),
    (PRO_EDIT, {"image_urls": [REF_URL] * 4}, "image_urls: must contain 1 to 3 items"),
    (EDIT, {"image_urls": ["bm90IGFuIGltYWdl"]}, "image_urls[0]: must be a URL or a base64"),
    (EDIT, {"image_urls": [REF_URL, "data:image/png;base64,!!"]}, "image_urls[1]: must be"),
]


@pytest.mark.parametrize(("model", "fields", "message"), CASES)
async def test_validation_answers_400_with_the_documented_body(
    client: httpx.AsyncClient, fake: FakeAIML, model: str, fields: dict[str, Any], message: str
) -> None:
    response = await generate(client, model, **fields)
    payload = assert_error_body(response, 400)
    assert payload["message"].startswith(message)
    assert len(fake.requests[0].errors) == 1
    assert fake.credits_spent == 0 and fake.requests[0].image_count == 0


async def test_every_problem_is_listed_and_bad_json_refused(client: httpx.AsyncClient) -> None:
    response = await client.post(
        API_PATH, json={"model": DEV, "seed": 0, "num_images": 9, "image_size": {"width": 100}}
    )
    message = assert_error_body(response, 400)["message"]
    assert message.split("; ") == [
        "prompt: is required",
        "image_size.width: must be between 512 and 2048",
        "seed: must be greater than or equal to 1",
        "num_images: must be between 1 and 4",
    ]
    bad = await client.post(
        API_PATH, content=b"{nope", headers={"content-type": "application/json"}
    )
    assert assert_error_body(bad, 400)["message"] == "body: must be valid JSON"
    not_object = await client.post(API_PATH, json=[1])
    assert assert_error_body(not_object, 400)["message"] == "body: must be a JSON object"


async def test_undocumented_fields_are_ignored_unless_strict(
    client: httpx.AsyncClient, fake: FakeAIML
) -> None:
    # As in the docs' pro-edit example (guidance_scale sent to pro): ignored, not refused.
    pro = await generate(client, PRO, num_images=4, guidance_scale=19, loras=[{"path": "a/b"}])
    assert pro.status_code == 200 and len(pro.json()["data"]) == 1
    assert fake.requests[0].ignored_fields == ("num_images", "guidance_scale", "loras")
    dev = await generate(client, DEV, image_urls=["garbage"], safety_tolerance=2)
    assert dev.status_code == 200
    assert fake.requests[1].ignored_fields == ("image_urls", "safety_tolerance")
    fake.strict = True
    strict = await generate(client, DEV, image_urls=[REF_URL])
    payload = assert_error_body(strict, 400)
    assert payload["message"] == "image_urls: is not allowed for blackforestlabs/flux-2"


# --------------------------------------------------------------------------- faults and limits


async def test_out_of_credits_is_403(client: httpx.AsyncClient, fake: FakeAIML) -> None:
    fake.credits = 30_000
    assert (await generate(client)).status_code == 200  # 25,200
    assert fake.credits == pytest.approx(4_800)
    broke = assert_error_body(await generate(client), 403)
    assert "credits" in broke["message"].lower()
    assert fake.credits == pytest.approx(4_800)


@pytest.mark.parametrize("status", [403, 429, 500, 503, 504])
async def test_fault_statuses_answer_the_documented_body(
    client: httpx.AsyncClient, fake: FakeAIML, status: int
) -> None:
    fake.retry_after = 2
    fake.faults.append(Fault(status=status))
    response = await generate(client)
    assert_error_body(response, status)
    assert ("retry-after" in response.headers) is (status in (429, 503))
    assert fake.credits_spent == 0
    assert (await generate(client)).status_code == 200  # the fault was consumed


async def test_custom_fault_bodies_and_billed_faults(
    client: httpx.AsyncClient, fake: FakeAIML
) -> None:
    fake.faults += [
        Fault(status=502),
        Fault(status=504, billed=True),
        Fault(status=200, body={"data": []}),
        Fault(status=400, body={"message": ["prompt must be a string"], "statusCode": 400}),
    ]
    gateway = await generate(client)
    assert gateway.status_code == 502 and "Bad Gateway" in gateway.text
    assert (await generate(client)).status_code == 504
    assert fake.credits_spent == 25_200  # the 504 ran and was billed
    odd = await generate(client)
    assert odd.status_code == 200 and odd.json() == {"data": []}
    listed = await generate(client)
    assert listed.status_code == 400 and listed.json()["message"] == ["prompt must be a string"]


async def test_concurrency_cap_answers_429(client: httpx.AsyncClient, fake: FakeAIML) -> None:
    fake.max_concurrent = 1
    fake.latency = 0.2
    first = asyncio.create_task(generate(client))
    async with asyncio.timeout(1.0):
        while fake.active == 0:  # noqa: ASYNC110 (the fake has no event for this; bounded)
            await asyncio.sleep(0.005)
    rejected = await generate(client)
    assert assert_error_body(rejected, 429)["message"] == "Too many concurrent requests"
    assert (await first).status_code == 200
    assert fake.max_active_seen == 1 and fake.rejected_429 == 1


async def test_slow_answer_outlives_the_client_timeout_and_is_still_billed(
    client: httpx.AsyncClient, fake: FakeAIML
) -> None:
    fake.faults.append(Fault(status=200, delay=0.3))
    with pytest.raises(httpx.ReadTimeout):
        await client.post(API_PATH, json=body_for(DEV), timeout=0.1)
    assert len(fake.requests) == 1 and fake.requests[0].status == 0  # still generating
    await asyncio.sleep(0.3)
    assert fake.requests[0].status == 200 and fake.credits_spent == 25_200


# --------------------------------------------------------------------------- result files


async def test_result_urls_expire_and_are_signed(client: httpx.AsyncClient, fake: FakeAIML) -> None:
    fake.url_ttl = 0.15
    url = (await generate(client)).json()["data"][0]["url"]
    async with httpx.AsyncClient() as anon:
        assert (await anon.get(url)).status_code == 200
        forged = await anon.get(url.split("&sig=")[0] + "&sig=forged")
        assert forged.status_code == 403
        missing = await anon.get(f"{fake.cdn_base_url}/files/9/0.png")
        assert missing.status_code == 404
        await asyncio.sleep(0.2)
        expired = await anon.get(url)
        assert expired.status_code == 403 and expired.text == "Request has expired"
    assert [d.status for d in fake.downloads] == [200, 403, 404, 403]
    # The API port does not serve files, and the CDN port does not serve the API.
    assert (await client.get(url.replace(fake.cdn_base_url, fake.base_url))).status_code == 404


async def test_chunked_downloads_and_download_faults(
    client: httpx.AsyncClient, fake: FakeAIML
) -> None:
    fake.download_chunked = True
    fake.download_faults.append(500)
    url = (await generate(client, output_format="png")).json()["data"][0]["url"]
    async with httpx.AsyncClient() as anon:
        assert (await anon.get(url)).status_code == 500
        image = await anon.get(url)
    assert image.status_code == 200 and "content-length" not in image.headers
    assert image.content == fake.image_bytes(0, 0)


# ---------------------------------------------------------------------- account balance


async def test_balance_answers_the_documented_body(
    fake: FakeAIML, client: httpx.AsyncClient
) -> None:
    fake.credits = 4_000_000  # $2
    fake.low_balance_threshold = 5_000_000
    response = await client.get(BALANCE_PATH)
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {
        "balance",
        "lowBalance",
        "lowBalanceThreshold",
        "lastUpdated",
        "autoDebitStatus",
        "status",
        "statusExplanation",
    }
    assert (body["balance"], body["lowBalance"], body["lowBalanceThreshold"]) == (
        4_000_000,
        True,
        5_000_000,
    )
    fake.credits = None  # unlimited
    assert (await client.get(BALANCE_PATH)).json()["lowBalance"] is False


async def test_balance_needs_the_key(fake: FakeAIML) -> None:
    async with httpx.AsyncClient(
        base_url=fake.base_url, headers={"Authorization": "Bearer nope"}
    ) as http:
        response = await http.get(BALANCE_PATH)
    assert response.status_code == 401
    body = response.json()
    assert set(body) == ERROR_KEYS
    assert (body["statusCode"], body["path"]) == (401, BALANCE_PATH)
    assert "nope" not in response.text
    assert fake.balance_checks == 1


async def test_max_takes_pros_fields_and_reports_dollars_when_asked(
    client: httpx.AsyncClient, fake: FakeAIML
) -> None:
    max_model = "blackforestlabs/flux-2-max"
    refused = await generate(client, max_model, safety_tolerance=2)  # an int, not "2"
    assert "safety_tolerance" in assert_error_body(refused, 400)["message"]
    fake.usd_spent = True
    response = await generate(
        client, max_model, safety_tolerance="1", image_size={"width": 1024, "height": 1024}
    )
    assert response.status_code == 200, response.text
    charged = fake.requests[-1].credits_charged
    assert charged == 147_000  # $0.0735 for its first megapixel
    assert response.json()["meta"] == {"usage": {"credits_used": charged, "usd_spent": 0.0735}}
