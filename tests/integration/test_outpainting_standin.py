"""The BFL stand-in's outpainting route (``/v1/flux-tools/outpainting-v1``), and the bot's
client against it: the schema's own validation (``additionalProperties: false``, no webhook
fields), the canvas-sized result and polling."""

from __future__ import annotations

import base64
import io
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from PIL import Image

from bot.providers.base import InputImage
from bot.providers.bfl import BFLClient
from bot.providers.bfl_options import OUTPAINT, PRO
from bot.variants import PromptMissing
from tests.fakes.bfl_server import FakeBFL, Outcome
from tests.integration.test_bfl_standin import poll_until_done

KEY = "test-bfl-key"
ROUTE = "/v1/flux-tools/outpainting-v1"


def png(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (10, 120, 200)).save(buffer, "PNG")
    return buffer.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@pytest.fixture
async def fake() -> AsyncIterator[FakeBFL]:
    async with FakeBFL(api_key=KEY, latency=0.05) as server:
        yield server


@pytest.fixture
async def client(fake: FakeBFL) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=fake.base_url, headers={"x-key": KEY}) as http:
        yield http


def body(**changes: Any) -> dict[str, Any]:
    values: dict[str, Any] = {"input_image": b64(png(128, 96)), "width": 256, "height": 192}
    values.update(changes)
    return {k: v for k, v in values.items() if v is not ...}


def problems(response: httpx.Response) -> set[tuple[str, str]]:
    assert response.status_code == 422, response.text
    return {(str(e["loc"][-1]), e["type"]) for e in response.json()["detail"]}


async def test_a_valid_request_answers_a_canvas_sized_png_by_polling(
    fake: FakeBFL, client: httpx.AsyncClient
) -> None:
    response = await client.post(ROUTE, json=body(prompt=None, mode="fast", auto_crop=False))
    assert response.status_code == 200, response.text
    answer = response.json()
    assert "polling_url" in answer and answer["cost"] == pytest.approx(5.0 + 0.01 * 2, abs=0.05)
    payload, _ = await poll_until_done(client, answer["polling_url"])
    assert payload["status"] == "Ready"
    image = Image.open(io.BytesIO(fake.image_bytes(answer["id"])))
    assert (image.format, image.size) == ("PNG", (256, 192))


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"webhook_url": "https://example.test/hook"}, "webhook_url"),
        ({"webhook_secret": "s"}, "webhook_secret"),
        ({"seed": 5}, "seed"),
        ({"guidance": 3}, "guidance"),
    ],
)
async def test_any_field_outside_the_schema_is_refused(
    client: httpx.AsyncClient, fake: FakeBFL, extra: dict[str, Any], field: str
) -> None:
    response = await client.post(ROUTE, json=body(**extra))
    assert problems(response) == {(field, "extra_forbidden")}
    assert fake.tasks == {}


async def test_input_image_width_and_height_are_required(client: httpx.AsyncClient) -> None:
    response = await client.post(ROUTE, json=body(input_image=..., width=..., height=...))
    assert problems(response) == {
        ("input_image", "missing"),
        ("width", "missing"),
        ("height", "missing"),
    }


async def test_the_values_are_checked(client: httpx.AsyncClient) -> None:
    response = await client.post(
        ROUTE,
        json=body(
            width=63,
            height=100.5,
            mode="slow",
            safety_tolerance=6,
            auto_crop="no",
            reference_offset_x="left",
            output_format="gif",
        ),
    )
    assert problems(response) == {
        ("width", "greater_than_equal"),
        ("height", "int_type"),
        ("mode", "enum"),
        ("safety_tolerance", "less_than_equal"),
        ("auto_crop", "bool_type"),
        ("reference_offset_x", "int_type"),
        ("output_format", "enum"),
    }


async def test_an_input_past_the_canvas_needs_auto_crop(client: httpx.AsyncClient) -> None:
    past = body(reference_offset_x=200, reference_offset_y=0)  # 128 wide from x=200 on 256
    assert problems(await client.post(ROUTE, json=past)) == {("body", "value_error")}
    too_big = body(width=64, height=64)  # centred, but larger than the canvas
    assert problems(await client.post(ROUTE, json=too_big)) == {("body", "value_error")}
    cropped = await client.post(ROUTE, json={**past, "auto_crop": True})
    assert cropped.status_code == 200, cropped.text
    inside = await client.post(ROUTE, json=body(reference_offset_x=128, reference_offset_y=96))
    assert inside.status_code == 200, inside.text


async def test_moderation_outcomes_apply_as_for_the_image_routes(
    fake: FakeBFL, client: httpx.AsyncClient
) -> None:
    fake.script("a forbidden horizon", Outcome(final_status="Content Moderated"))
    credits = fake.credits
    response = await client.post(ROUTE, json=body(prompt="a forbidden horizon"))
    payload, _ = await poll_until_done(client, response.json()["polling_url"])
    assert payload["status"] == "Content Moderated"
    assert fake.credits == credits  # refunded


async def test_the_bots_client_sends_exactly_the_schemas_fields_and_is_accepted(
    fake: FakeBFL,
) -> None:
    client = BFLClient(KEY, fake.base_url, allow_loopback=True)
    try:
        params = OUTPAINT.validate(
            "",
            options={"reference_offset_x": 64, "reference_offset_y": 48, "mode": "fast"},
            width=256,
            height=192,
        )
        image = InputImage("image/png", 128, 96, png(128, 96))
        submission = await client.submit(OUTPAINT, params, [image], user_id=42)
    finally:
        await client.aclose()
    [sent] = fake.submissions
    assert sent.status == 200 and sent.task_id == submission.task_id
    assert set(sent.body) == {
        "input_image",
        "width",
        "height",
        "reference_offset_x",
        "reference_offset_y",
        "auto_crop",
        "mode",
        "disable_pup",
        "safety_tolerance",
        "output_format",
        "user",
    }  # no prompt (there was none), no seed, no webhook


def test_params_without_a_prompt_are_valid_only_for_a_tool() -> None:
    assert OUTPAINT.validate("  ", width=256, height=192).prompt == ""
    with pytest.raises(PromptMissing):
        PRO.validate("  ")
