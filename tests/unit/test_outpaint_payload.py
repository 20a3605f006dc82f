"""The outpainting body: exactly the fields of BFL's schema (it refuses any other)."""

from __future__ import annotations

import base64
import io

import pytest
from PIL import Image

from bot.catalogue import available_tools, available_variants, get_variant
from bot.providers.base import InputImage, WebhookRequest
from bot.providers.bfl import build_outpaint_payload
from bot.providers.bfl_options import OUTPAINT
from bot.references import ReferenceChecks


def test_the_body_is_the_schemas_fields_only_even_with_a_webhook_offered() -> None:
    params = OUTPAINT.validate(
        "a lighthouse",
        options={"reference_offset_x": 0, "reference_offset_y": 40, "mode": "fast"},
        width=1536,
        height=1024,
        seed=99,
    )
    image = InputImage("image/png", 1024, 1024, b"png-bytes")
    body = build_outpaint_payload(
        OUTPAINT, params, [image], user="member-7", webhook=WebhookRequest("https://x.test/h", "s")
    )
    assert body == {
        "input_image": base64.b64encode(b"png-bytes").decode(),
        "width": 1536,
        "height": 1024,
        "reference_offset_x": 0,
        "reference_offset_y": 40,
        "auto_crop": False,
        "mode": "fast",
        "prompt": "a lighthouse",
        "disable_pup": False,
        "safety_tolerance": 2,
        "output_format": "jpeg",
        "user": "member-7",
    }


def test_a_removed_prompt_sends_no_prompt() -> None:
    params = OUTPAINT.validate("", width=128, height=128)
    image = InputImage("image/png", 64, 64, b"x")
    assert "prompt" not in build_outpaint_payload(OUTPAINT, params, [image], user="m")


def test_without_exactly_one_image_nothing_is_built() -> None:
    params = OUTPAINT.validate("", width=128, height=128)
    with pytest.raises(ValueError):
        build_outpaint_payload(OUTPAINT, params, [], user="m")


def test_outpainting_is_a_tool_never_a_command_but_known_to_jobs() -> None:
    assert "outpaint" not in available_variants(include_preview=True, providers=["bfl", "aiml"])
    assert available_tools(["bfl"]) == {"outpaint": OUTPAINT}
    assert available_tools(["aiml"]) == {}
    assert get_variant("outpaint") is OUTPAINT
    assert OUTPAINT.tool and not OUTPAINT.webhooks


async def test_a_scaled_composition_sends_the_input_resized_to_its_plan() -> None:
    """A canvas over the limit shrinks with its input (bot/tools/canvas.py): the image itself is
    resized to the planned size before it is sent, keeping its format."""
    for fmt, content_type in (("PNG", "image/png"), ("JPEG", "image/jpeg")):
        buffer = io.BytesIO()
        Image.new("RGB", (200, 100), (1, 2, 3)).save(buffer, fmt)
        original = InputImage(content_type, 200, 100, buffer.getvalue())
        checks = ReferenceChecks()
        try:
            assert await checks.fit(original, (200, 100)) is original
            fitted = await checks.fit(original, (120, 60))
        finally:
            checks.close()
        assert (fitted.width, fitted.height, fitted.content_type) == (120, 60, content_type)
        with Image.open(io.BytesIO(fitted.data)) as decoded:
            assert (decoded.size, decoded.format) == ((120, 60), fmt)
