"""The outpainting body: exactly the fields of BFL's schema (it refuses any other)."""

from __future__ import annotations

import base64

import pytest

from bot.catalogue import available_tools, available_variants, get_variant
from bot.providers.base import InputImage, WebhookRequest
from bot.providers.bfl import build_outpaint_payload, hash_user
from bot.providers.bfl_options import OUTPAINT


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
        OUTPAINT, params, [image], user_id=7, webhook=WebhookRequest("https://x.test/h", "s")
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
        "user": hash_user(7),
    }


def test_a_removed_prompt_sends_no_prompt() -> None:
    params = OUTPAINT.validate("", width=128, height=128)
    image = InputImage("image/png", 64, 64, b"x")
    assert "prompt" not in build_outpaint_payload(OUTPAINT, params, [image], user_id=1)


def test_without_exactly_one_image_nothing_is_built() -> None:
    params = OUTPAINT.validate("", width=128, height=128)
    with pytest.raises(ValueError):
        build_outpaint_payload(OUTPAINT, params, [], user_id=1)


def test_outpainting_is_a_tool_never_a_command_but_known_to_jobs() -> None:
    assert "outpaint" not in available_variants(include_preview=True, providers=["bfl", "aiml"])
    assert available_tools(["bfl"]) == {"outpaint": OUTPAINT}
    assert available_tools(["aiml"]) == {}
    assert get_variant("outpaint") is OUTPAINT
    assert OUTPAINT.tool and not OUTPAINT.webhooks
