"""The AI/ML API client against its stand-in: exact requests, exact bytes, costs, every error."""

from __future__ import annotations

import base64
import io
import random
import socket
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import httpx
import pytest
from PIL import Image

from bot.catalogue import CATALOGUE
from bot.errors import (
    InsufficientCredits,
    InvalidRequest,
    ProviderAccessDenied,
    ProviderBusy,
    ProviderError,
    ProviderRejected,
    ProviderUnavailable,
    ResultTooLarge,
    ResultUnavailable,
    SubmitOutcomeUnknown,
)
from bot.jobs.engine import JobEngine
from bot.jobs.models import JobState
from bot.providers.aiml import (
    AIML_UNITS_PER_CREDIT,
    AIMLClient,
    FinishedSubmission,
    Generation,
    ResultLost,
    read_usage,
    usage_to_credits,
)
from bot.providers.aiml_payload import (
    LoRA,
    build_payload,
    fit_size,
    image_data_url,
    model_for,
    payload_for,
)
from bot.providers.base import InputImage, TaskOutcome
from bot.storage.db import Database
from bot.variants import MEGAPIXEL, JobParams, OptionKind, OptionSpec, Pricing, SizeRule, Variant
from tests.conftest import FAST_POLLING, make_request
from tests.fakes.aiml_server import API_PATH, FakeAIML, Fault
from tests.fakes.notifier import RecordingNotifier

KEY = "test-aiml-key-0123456789"
DEV = "blackforestlabs/flux-2"
EDIT = "blackforestlabs/flux-2-edit"
LORA = "blackforestlabs/flux-2-lora"
LORA_EDIT = "blackforestlabs/flux-2-lora-edit"
PRO = "blackforestlabs/flux-2-pro"
PRO_EDIT = "blackforestlabs/flux-2-pro-edit"


@pytest.fixture
async def fake() -> AsyncIterator[FakeAIML]:
    # strict: any field a model does not document is a 400, so every test below also
    # proves the client sends only documented fields.
    async with FakeAIML(api_key=KEY, latency=0.01, strict=True) as server:
        yield server


@pytest.fixture
async def client(fake: FakeAIML) -> AsyncIterator[AIMLClient]:
    aiml = AIMLClient(KEY, fake.base_url, read_timeout=5.0, backoff_base=0.001, allow_loopback=True)
    yield aiml
    await aiml.aclose()


def png(width: int, height: int, colour: tuple[int, int, int] = (200, 30, 30)) -> InputImage:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(buffer, "PNG")
    return InputImage("image/png", width, height, buffer.getvalue())


# --------------------------------------------------------------------------- draft catalogue
# The entries proposed for bot/variants.py (see the report). The LoRA path options would be
# a new OptionKind.TEXT; payload_for reads only their names and values, so CHOICE stands in.

AIML_SIZES = SizeRule(min_side=512, max_side=2048, multiple=32, max_pixels=4 * MEGAPIXEL)


def _dev_options() -> tuple[OptionSpec, ...]:
    return (
        OptionSpec(
            "guidance",
            OptionKind.FLOAT,
            "How closely to follow the prompt",
            2.5,
            0,
            20,
            api_field="guidance_scale",
        ),
        OptionSpec(
            "steps", OptionKind.INT, "Sampling steps", 28, 4, 50, api_field="num_inference_steps"
        ),
        OptionSpec(
            "acceleration",
            OptionKind.CHOICE,
            "Speed over quality",
            "regular",
            choices=("none", "regular", "high"),
        ),
        OptionSpec(
            "prompt_upsampling",
            OptionKind.BOOL,
            "Let the model expand your prompt",
            False,
            api_field="enable_prompt_expansion",
        ),
        OptionSpec("num_images", OptionKind.INT, "How many images", 1, 1, 4),
        OptionSpec(
            "output_format",
            OptionKind.CHOICE,
            "Image file format",
            "jpeg",
            choices=("jpeg", "png", "webp"),
        ),
    )


def _lora_options() -> tuple[OptionSpec, ...]:
    specs: list[OptionSpec] = []
    for n in (1, 2, 3):
        specs.append(OptionSpec(f"lora_{n}", OptionKind.CHOICE, "LoRA URL or owner/repo", None))
        specs.append(OptionSpec(f"lora_{n}_scale", OptionKind.FLOAT, "LoRA strength", 1.0, 0, 4))
    return tuple(specs)


DEV_VARIANT = Variant(
    key="dev",
    label="FLUX.2 [dev]",
    description="Open-weights FLUX.2 via the AI/ML API",
    provider="aiml",
    endpoint=DEV,
    max_references=3,
    sizes=AIML_SIZES,
    pricing=Pricing(1.26, 1.26),
    options=_dev_options(),
)
LORA_VARIANT = Variant(
    key="lora",
    label="FLUX.2 [dev] + LoRA",
    description="FLUX.2 [dev] with up to 3 LoRAs",
    provider="aiml",
    endpoint=LORA,
    max_references=3,
    sizes=AIML_SIZES,
    pricing=Pricing(2.205, 2.205),
    options=_dev_options() + _lora_options(),
)
PRO_VARIANT = Variant(
    key="pro-aiml",
    label="FLUX.2 [pro]",
    description="FLUX.2 [pro] via the AI/ML API",
    provider="aiml",
    endpoint=PRO,
    max_references=3,
    sizes=AIML_SIZES,
    pricing=Pricing(3.15, 1.575),
    options=(
        OptionSpec("safety_tolerance", OptionKind.INT, "1 strictest, 6 most lenient", 2, 1, 6),
        OptionSpec(
            "output_format",
            OptionKind.CHOICE,
            "Image file format",
            "jpeg",
            choices=("jpeg", "png", "webp"),
        ),
    ),
)
DEV_DEFAULTS = {
    "guidance_scale": 2.5,
    "num_inference_steps": 28,
    "acceleration": "regular",
    "enable_prompt_expansion": False,
    "num_images": 1,
    "output_format": "jpeg",
}


def params(variant: Variant, prompt: str = "a lighthouse", **kwargs: Any) -> JobParams:
    return variant.validate(prompt, rng=random.Random(0), **kwargs)


# --------------------------------------------------------------------------- exact bodies


@pytest.mark.parametrize("model", [DEV, EDIT, LORA, LORA_EDIT, PRO, PRO_EDIT])
async def test_each_model_exact_body_and_bytes(
    client: AIMLClient, fake: FakeAIML, model: str
) -> None:
    reference = png(64, 48)
    refs = [image_data_url(reference)] if model.endswith("-edit") else []
    pro = model.startswith(PRO)
    options: dict[str, Any] = (
        {"safety_tolerance": 5, "output_format": "png"}
        if pro
        else {
            "guidance_scale": 4.0,
            "num_inference_steps": 20,
            "num_images": 2,
            "acceleration": "high",
            "enable_prompt_expansion": True,
            "output_format": "png",
        }
    )
    loras = [LoRA("owner/style", 0.8), LoRA("https://example.com/x.safetensors", 2)]
    payload = build_payload(
        model,
        " a fox ",
        options,
        refs,
        size=(1024, 768),
        seed=99,
        loras=loras if "lora" in model else (),
    )
    generation = await client.generate(payload)

    [request] = fake.requests
    assert request.path == API_PATH and request.status == 200
    assert request.headers["authorization"] == f"Bearer {KEY}"
    expected: dict[str, Any] = {
        "model": model,
        "prompt": "a fox",
        "image_size": {"width": 1024, "height": 768},
        "seed": 99,
        "output_format": "png",
    }
    if pro:
        expected["safety_tolerance"] = "5"  # a string, as the API wants
    else:
        expected |= {
            "guidance_scale": 4.0,
            "num_inference_steps": 20,
            "num_images": 2,
            "acceleration": "high",
            "enable_prompt_expansion": True,
        }
    if "lora" in model:
        expected["loras"] = [
            {"path": "owner/style", "scale": 0.8},
            {"path": "https://example.com/x.safetensors", "scale": 2},
        ]
    if refs:
        expected["image_urls"] = [
            "data:image/png;base64," + base64.b64encode(reference.data).decode()
        ]
    assert request.body == expected
    count = 1 if pro else 2
    assert [image.data for image in generation.images] == [
        fake.image_bytes(0, n) for n in range(count)
    ]
    assert {(i.content_type, i.width, i.height) for i in generation.images} == {
        ("image/png", 32, 32)
    }
    assert generation.model == model and generation.failed_images == 0
    assert generation.usage == request.credits_charged and generation.usage_field == "credits_used"
    assert generation.cost == round(request.credits_charged / 20_000, 4)


async def test_payload_for_the_draft_catalogue_entries(client: AIMLClient, fake: FakeAIML) -> None:
    # dev, text to image, no size: 1024×1024 as on BFL, with every option explicit.
    dev = payload_for(DEV_VARIANT, params(DEV_VARIANT, seed=5), [])
    assert dev == {
        "model": DEV,
        "prompt": "a lighthouse",
        "image_size": {"width": 1024, "height": 1024},
        "seed": 5,
        **DEV_DEFAULTS,
    }
    # dev with references: the -edit model, sized from the first reference at ~1 MP.
    refs = [png(1600, 900), png(64, 64)]
    edit = payload_for(DEV_VARIANT, params(DEV_VARIANT, seed=5), refs)
    assert edit["model"] == EDIT and edit["image_size"] == {"width": 1376, "height": 768}
    assert edit["image_urls"] == [image_data_url(r) for r in refs]
    # lora: the flat lora_N options become the loras list, in slot order.
    # (validate cannot coerce the lora_N paths until OptionKind.TEXT exists: set them here)
    validated = params(LORA_VARIANT, seed=9, width=1536, height=640, options={"num_images": 4})
    lora_params = replace(
        validated,
        options={
            **validated.options,
            "lora_2": "https://example.com/b.safetensors",
            "lora_2_scale": 3.5,
            "lora_1": "owner/a",
        },
    )
    lora = payload_for(LORA_VARIANT, lora_params, [])
    assert lora == {
        "model": LORA,
        "prompt": "a lighthouse",
        "image_size": {"width": 1536, "height": 640},
        "seed": 9,
        **DEV_DEFAULTS,
        "num_images": 4,
        "loras": [
            {"path": "owner/a", "scale": 1.0},
            {"path": "https://example.com/b.safetensors", "scale": 3.5},
        ],
    }
    assert payload_for(LORA_VARIANT, lora_params, [png(64, 64)])["model"] == LORA_EDIT
    # pro: safety_tolerance goes as a string; no num_images, no dev fields.
    pro = payload_for(PRO_VARIANT, params(PRO_VARIANT, seed=3, options={"safety_tolerance": 6}), [])
    assert pro == {
        "model": PRO,
        "prompt": "a lighthouse",
        "image_size": {"width": 1024, "height": 1024},
        "seed": 3,
        "safety_tolerance": "6",
        "output_format": "jpeg",
    }
    for body in (dev, edit, lora, pro):  # the strict stand-in accepts every one of them
        await client.generate(body)
    assert [r.status for r in fake.requests] == [200, 200, 200, 200]
    assert fake.requests[2].image_count == 4


@pytest.mark.parametrize(
    ("model", "kwargs", "message"),
    [
        (PRO, {"options": {"num_images": 2}}, "does not take num_images"),
        (
            PRO_EDIT,
            {"options": {"guidance_scale": 3}, "image_urls": ["https://example.com/a.png"]},
            "does not take guidance_scale",
        ),
        (DEV, {"image_urls": ["https://example.com/a.png"]}, "does not take reference images"),
        (EDIT, {}, "needs 1 to 3 reference images"),
        (LORA_EDIT, {"image_urls": ["u"] * 4}, "needs 1 to 3 reference images"),
        (DEV, {"loras": [LoRA("a/b")]}, "does not take LoRA adapters"),
        (LORA, {"loras": [LoRA("a/b")] * 4}, "At most 3 LoRA adapters"),
        (LORA, {"loras": [LoRA("a/b", 4.5)]}, "LoRA 1 scale must be between 0 and 4"),
        (LORA, {"loras": [LoRA("a/b"), LoRA("not a repo")]}, "LoRA 2 must be an http(s) URL"),
        (LORA, {"loras": [LoRA("ftp://x/y")]}, "LoRA 1 must be an http(s) URL"),
        (DEV, {"size": (1000, 1024)}, "The width must be a multiple of 32"),
        (DEV, {"size": (1024, 2080)}, "The height must be between 512 and 2048"),
        (DEV, {"size": "huge"}, "The size must be one of"),
        (DEV, {"seed": 0}, "The seed must be a whole number of at least 1"),
        (DEV, {"prompt": "x" * 4001}, "The prompt is 4001 characters"),
        (DEV, {"prompt": "  "}, "Please give a prompt"),
        (DEV, {"options": {"num_images": 5}}, "number of images must be between 1 and 4"),
        (DEV, {"options": {"num_inference_steps": 3}}, "steps must be between 4 and 50"),
        (DEV, {"options": {"guidance_scale": 21}}, "guidance scale must be between 0 and 20"),
        (DEV, {"options": {"acceleration": "max"}}, "acceleration must be one of"),
        (LORA, {"options": {"enable_prompt_expansion": 1}}, "must be true or false"),
        (PRO, {"options": {"safety_tolerance": 0}}, "safety tolerance must be between 1 and 6"),
        ("blackforestlabs/flux-3", {}, "has no model"),
    ],
)
def test_build_payload_refuses_what_the_api_would(
    model: str, kwargs: dict[str, Any], message: str
) -> None:
    prompt = kwargs.pop("prompt", "p")
    with pytest.raises(InvalidRequest, match=message.replace("(", r"\(").replace(")", r"\)")):
        build_payload(model, prompt, **kwargs)


def test_model_for_and_fit_size() -> None:
    assert model_for(DEV, edit=True) == EDIT and model_for(EDIT, edit=False) == DEV
    assert model_for(PRO, edit=True) == PRO_EDIT and model_for(LORA, edit=True) == LORA_EDIT
    assert fit_size(1024, 1024) == (1024, 1024)
    assert fit_size(4000, 3000) == (1184, 896)
    assert fit_size(300, 200) == (1248, 832)  # small references are scaled up to ~1 MP
    assert fit_size(8000, 500) == (2048, 512)  # extreme aspects are clamped
    for width, height in (fit_size(1600, 900), fit_size(333, 777)):
        assert width % 32 == 0 and height % 32 == 0


# --------------------------------------------------------------------------- results and usage


@pytest.mark.parametrize("mode", ["url", "b64_json"])
async def test_url_and_base64_results_exact_bytes(
    client: AIMLClient, fake: FakeAIML, mode: str
) -> None:
    fake.result_mode = mode  # type: ignore[assignment]
    generation = await client.generate(
        build_payload(DEV, "p", {"num_images": 3, "output_format": "webp"}, seed=4)
    )
    assert [i.data for i in generation.images] == [fake.image_bytes(0, n) for n in range(3)]
    assert all(i.content_type == "image/webp" for i in generation.images)
    assert len(fake.downloads) == (3 if mode == "url" else 0)


@pytest.mark.parametrize("usage_field", ["credits_used", "tokens_used"])
async def test_usage_is_converted_from_either_field(fake: FakeAIML, usage_field: str) -> None:
    fake.usage_field = usage_field  # type: ignore[assignment]
    body = build_payload(PRO, "p", size=(1472, 512), seed=1)
    default = AIMLClient(KEY, fake.base_url, allow_loopback=True)
    # e.g. another currency
    custom = AIMLClient(KEY, fake.base_url, units_per_credit=10_000, allow_loopback=True)
    try:
        first, second = await default.generate(body), await custom.generate(body)
    finally:
        await default.aclose()
        await custom.aclose()
    # The docs' own example: 63,000 AI/ML credits = $0.0315 = 3.15 of ours.
    assert first.usage == second.usage == 63_000 and first.usage_field == usage_field
    assert first.cost == 3.15 and second.cost == 6.3
    assert AIML_UNITS_PER_CREDIT == 20_000


async def test_missing_or_legacy_usage(client: AIMLClient, fake: FakeAIML) -> None:
    fake.usage_field = None
    assert (await client.generate(build_payload(DEV, "p"))).cost is None
    image = base64.b64encode(png(40, 30).data).decode()
    fake.faults += [
        Fault(200, body={"data": [{"b64_json": image}], "usage": {"total_tokens": 42_000}}),
        Fault(200, body={"data": [{"b64_json": image}], "usage": {"total_tokens": 0}}),
    ]
    legacy = await client.generate(build_payload(DEV, "p"))
    assert (legacy.usage, legacy.usage_field, legacy.cost) == (42_000, "total_tokens", 2.1)
    assert legacy.images[0].width == 40
    zero = await client.generate(build_payload(DEV, "p"))
    assert zero.cost is None  # 0 tokens on the OpenAI-style example means "not reported"
    assert read_usage({"meta": {"usage": {"credits_used": True}}}) == (None, None)
    assert usage_to_credits(132_300) == 6.615


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("fault", "error", "user_text"),
    [
        (Fault(403), InsufficientCredits, "out of credits"),
        (Fault(429), ProviderBusy, "busy"),
        (Fault(500), SubmitOutcomeUnknown, "risk paying twice"),
        (Fault(502), SubmitOutcomeUnknown, "risk paying twice"),
        (Fault(504, billed=True), SubmitOutcomeUnknown, "risk paying twice"),
        (Fault(404), ProviderRejected, "rejected the request"),
    ],
)
async def test_error_statuses_map_to_the_typed_errors_without_retrying(
    client: AIMLClient, fake: FakeAIML, fault: Fault, error: type[ProviderError], user_text: str
) -> None:
    fake.faults.append(fault)
    with pytest.raises(error) as caught:
        await client.generate(build_payload(DEV, "p"))
    assert type(caught.value) is error
    assert user_text in caught.value.user_message
    assert len(fake.requests) == 1  # never a second POST


async def test_429_carries_retry_after_and_the_concurrency_cap_is_busy(
    client: AIMLClient, fake: FakeAIML
) -> None:
    fake.retry_after = 3
    fake.faults.append(Fault(429))
    with pytest.raises(ProviderBusy) as caught:
        await client.generate(build_payload(DEV, "p"))
    assert caught.value.retry_after == 3.0
    fake.max_concurrent = 0
    with pytest.raises(ProviderBusy):
        await client.generate(build_payload(DEV, "p"))
    assert fake.rejected_429 == 2 and len(fake.requests) == 2


async def test_bad_key_is_access_denied_and_credits_exhausted_is_403(fake: FakeAIML) -> None:
    wrong = AIMLClient("wrong-key", fake.base_url, allow_loopback=True)
    try:
        with pytest.raises(ProviderAccessDenied):
            await wrong.generate(build_payload(DEV, "p"))
    finally:
        await wrong.aclose()
    fake.credits = 1000  # less than one image
    right = AIMLClient(KEY, fake.base_url, allow_loopback=True)
    try:
        with pytest.raises(InsufficientCredits) as caught:
            await right.generate(build_payload(DEV, "p"))
    finally:
        await right.aclose()
    assert "Insufficient credits" in str(caught.value)
    assert [r.status for r in fake.requests] == [401, 403]


async def test_400_names_the_field_from_the_message(client: AIMLClient, fake: FakeAIML) -> None:
    # Bypass build_payload, as a request it did not foresee would.
    with pytest.raises(ProviderRejected) as caught:
        await client.generate(
            {"model": DEV, "prompt": "p", "image_size": {"width": 1000, "height": 1024}}
        )
    assert caught.value.field == "image_size.width"
    assert str(caught.value) == "image_size.width: must be a multiple of 32"
    assert "image_size.width" in caught.value.user_message
    # NestJS-style message lists, and a `path` that names a field, are understood too.
    fake.faults += [
        Fault(400, body={"message": ["loras[1].scale must not be greater than 4"]}),
        Fault(400, body={"message": "must be a string", "path": "safety_tolerance"}),
        Fault(400, body="<html>oops</html>"),
    ]
    fields = []
    for _ in range(3):
        with pytest.raises(ProviderRejected) as caught:
            await client.generate(build_payload(DEV, "p"))
        fields.append(caught.value.field)
    assert fields == ["loras[1].scale", "safety_tolerance", None]
    assert str(caught.value) == "invalid request (HTTP 400)"


async def test_api_messages_never_leak_the_key(client: AIMLClient, fake: FakeAIML) -> None:
    fake.faults.append(Fault(401, body={"message": f"key {KEY} revoked", "statusCode": 401}))
    with pytest.raises(ProviderAccessDenied) as caught:
        await client.generate(build_payload(DEV, "p"))
    assert KEY not in str(caught.value) and "***" in str(caught.value)
    assert KEY not in caught.value.user_message


async def test_503_is_retried_then_unavailable(client: AIMLClient, fake: FakeAIML) -> None:
    fake.faults += [Fault(503), Fault(503)]
    generation = await client.generate(build_payload(DEV, "p"))
    assert len(generation.images) == 1
    assert [r.status for r in fake.requests] == [503, 503, 200]
    fake.faults += [Fault(503)] * 4
    with pytest.raises(ProviderUnavailable):
        await client.generate(build_payload(DEV, "p"))
    assert len(fake.requests) == 3 + 4  # connect_attempts (4) refusals, then give up


async def test_no_retry_after_a_read_timeout(fake: FakeAIML) -> None:
    fake.faults.append(Fault(200, delay=2.0))  # the generation outlasts our read timeout
    impatient = AIMLClient(KEY, fake.base_url, read_timeout=0.1, allow_loopback=True)
    try:
        with pytest.raises(SubmitOutcomeUnknown) as caught:
            await impatient.generate(build_payload(DEV, "p"))
    finally:
        await impatient.aclose()
    assert "ReadTimeout" in str(caught.value)
    assert len(fake.requests) == 1  # exactly one POST: it may be billed, so never resent


class FlakyTransport(httpx.AsyncBaseTransport):
    """Fails the first `failures` connections the way an unreachable host does."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.attempts = 0
        self._inner = httpx.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.attempts += 1
        if self.attempts <= self.failures:
            raise httpx.ConnectError("connection refused", request=request)
        return await self._inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self._inner.aclose()


async def test_connect_errors_are_retried_with_backoff(fake: FakeAIML) -> None:
    fake.result_mode = "b64_json"  # so that the transport sees only the POSTs
    transport = FlakyTransport(failures=2)
    async with httpx.AsyncClient(transport=transport) as http:
        flaky = AIMLClient(KEY, fake.base_url, backoff_base=0.001, http=http, allow_loopback=True)
        generation = await flaky.generate(build_payload(DEV, "p"))
    assert len(generation.images) == 1
    assert transport.attempts == 3 and len(fake.requests) == 1
    # An address nobody listens on: every attempt fails to connect, nothing was sent.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    dead = AIMLClient(
        KEY,
        f"http://127.0.0.1:{port}",
        backoff_base=0.001,
        connect_attempts=3,
        allow_loopback=True,
    )
    try:
        with pytest.raises(ProviderUnavailable, match="ConnectError"):
            await dead.generate(build_payload(DEV, "p"))
    finally:
        await dead.aclose()


async def test_the_key_never_reaches_the_download_host(client: AIMLClient, fake: FakeAIML) -> None:
    await client.generate(build_payload(DEV, "p", {"num_images": 2}))
    assert fake.cdn_base_url != fake.base_url
    assert fake.requests[0].headers["authorization"] == f"Bearer {KEY}"
    assert len(fake.downloads) == 2
    for download in fake.downloads:
        assert "authorization" not in download.headers
        assert KEY not in str(download.headers)


@pytest.mark.parametrize("mode", ["declared", "chunked", "b64_json"])
async def test_byte_cap(fake: FakeAIML, mode: str) -> None:
    fake.download_chunked = mode == "chunked"
    fake.result_mode = "b64_json" if mode == "b64_json" else "url"
    body = build_payload(DEV, "p", {"output_format": "png"}, seed=1)
    size = len(await _one_image(fake, body))
    exact = AIMLClient(KEY, fake.base_url, max_result_bytes=size, allow_loopback=True)
    tight = AIMLClient(KEY, fake.base_url, max_result_bytes=size - 1, allow_loopback=True)
    try:
        assert len((await exact.generate(body)).images[0].data) == size
        with pytest.raises(ResultTooLarge):
            await tight.generate(body)
    finally:
        await exact.aclose()
        await tight.aclose()


async def _one_image(fake: FakeAIML, body: dict[str, Any]) -> bytes:
    probe = AIMLClient(KEY, fake.base_url, allow_loopback=True)
    try:
        return (await probe.generate(body)).images[0].data
    finally:
        await probe.aclose()


async def test_partial_and_total_result_failures(client: AIMLClient, fake: FakeAIML) -> None:
    fake.download_faults.append(500)
    partial = await client.generate(build_payload(DEV, "p", {"num_images": 2}))
    assert len(partial.images) == 1 and partial.failed_images == 1
    fake.url_ttl = 0.0  # links expire at once
    with pytest.raises(ResultUnavailable, match="answered 403"):
        await client.generate(build_payload(DEV, "p"))
    not_image = base64.b64encode(b"plain text, not an image").decode()
    fake.faults += [
        Fault(200, body={"data": [{"b64_json": not_image}]}),
        Fault(200, body={"data": [{"b64_json": "@@@"}]}),
        Fault(200, body={"data": []}),
        Fault(200, body={"data": [{"url": None, "b64_json": None}]}),
        Fault(200, body={"data": [{"url": "file:///etc/passwd"}]}),
    ]
    messages = []
    for _ in range(5):
        with pytest.raises(ResultUnavailable) as caught:
            await client.generate(build_payload(DEV, "p"))
        messages.append(str(caught.value))
    assert messages == [
        "result is not an image: not a readable image",
        "inline result is not valid base64",
        "the answer carries no images",
        "a result entry has neither url nor b64_json",
        "result link is not http(s)",
    ]


# --------------------------------------------------------------------------- Provider protocol


async def test_submit_poll_download_hand_over_the_finished_images(
    client: AIMLClient, fake: FakeAIML
) -> None:
    job_params = params(DEV_VARIANT, seed=11, options={"num_images": 2})
    submission = await client.submit(DEV_VARIANT, job_params, [], user_id=1)
    assert isinstance(submission, FinishedSubmission)
    assert submission.polling_url is None and submission.task_id.startswith("aiml-")
    assert submission.cost == round(fake.requests[0].credits_charged / 20_000, 4)
    assert [i.data for i in submission.images] == [fake.image_bytes(0, n) for n in (0, 1)]

    result = await client.poll(submission.task_id, None)
    assert result is submission.result
    assert result.outcome is TaskOutcome.READY and result.seed == 11
    assert result.cost == submission.cost and len(result.sample_urls) == 2
    downloaded = [await client.download(url) for url in result.sample_urls]
    assert downloaded == list(submission.images)
    # Handed over once: a second poll (e.g. after a restart) reports the loss, not a retry.
    with pytest.raises(ResultLost) as caught:
        await client.poll(submission.task_id, None)
    assert "lost it" in caught.value.user_message
    with pytest.raises(ResultLost):
        await client.download(result.sample_urls[0])
    assert len(fake.requests) == 1


async def test_submit_refuses_a_catalogue_mismatch_before_paying(
    client: AIMLClient, fake: FakeAIML
) -> None:
    bad = JobParams(prompt="p", width=None, height=None, seed=0, options={})
    with pytest.raises(ProviderRejected, match="seed"):
        await client.submit(DEV_VARIANT, bad, [], user_id=1)
    assert not fake.requests


async def test_the_current_engine_runs_the_client_unchanged(
    db: Database,
    fake: FakeAIML,
    client: AIMLClient,
    notifier: RecordingNotifier,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """No engine change needed: submit generates, poll and download hand the images over."""
    monkeypatch.setitem(CATALOGUE, "dev", DEV_VARIANT)
    engine = JobEngine(db, {"aiml": client}, notifier, polling=FAST_POLLING)
    await engine.start()
    try:
        request = make_request(
            "a lighthouse",
            variant="dev",
            seed=21,
            options={"num_images": 3},
            inputs=[png(640, 480)],
        )
        job, _ = await engine.accept(request)
        [final] = await engine.wait_closed([job.id], 5)
    finally:
        await engine.stop()
    [sent] = fake.requests
    assert sent.model == EDIT and sent.body["image_size"] == {"width": 1184, "height": 896}
    shown = notifier.outcome(job.id)
    assert shown is not None and shown.kind == "result"
    assert shown.images == [fake.image_bytes(0, n) for n in range(3)]
    assert final.state is JobState.DELIVERED and final.result_seed == 21
    assert final.cost == round(sent.credits_charged / 20_000, 4)


def test_generation_is_plain_data() -> None:
    generation = Generation(DEV, (), 1.0, 20_000.0, "credits_used")
    assert generation.failed_images == 0


async def test_usd_spent_is_preferred_and_counted_in_dollars(fake: FakeAIML) -> None:
    """bfl-tools.md: newer answers carry `meta.usage.usd_spent`; it wins over credits_used,
    and is converted at $0.01 a credit whatever AIML_UNITS_PER_CREDIT says."""
    image = base64.b64encode(png(40, 30).data).decode()
    usage = {"credits_used": 63_000, "usd_spent": 0.04}
    fake.faults.append(Fault(200, body={"data": [{"b64_json": image}], "meta": {"usage": usage}}))
    client = AIMLClient(KEY, fake.base_url, units_per_credit=10_000, allow_loopback=True)
    try:
        generation = await client.generate(build_payload(DEV, "p"))
    finally:
        await client.aclose()
    assert (generation.usage_field, generation.cost) == ("usd_spent", 4.0)
