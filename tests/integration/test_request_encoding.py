"""Submitting large references: the base64 and JSON encoding run off the event loop, and
the provider still receives the exact bytes."""

from __future__ import annotations

import base64
import io
import threading
from collections.abc import Callable
from typing import Any

import pytest
from PIL import Image

from bot.catalogue import get_variant
from bot.providers import http as provider_http
from bot.providers.aiml import AIMLClient
from bot.providers.base import InputImage
from bot.providers.bfl import BFLClient
from tests.conftest import BFL_KEY
from tests.fakes.aiml_server import FakeAIML
from tests.fakes.bfl_server import FakeBFL

AIML_KEY = "test-aiml-key-encoding"


def reference() -> InputImage:
    buffer = io.BytesIO()
    Image.new("RGB", (600, 600), (10, 200, 90)).save(buffer, "PNG")
    return InputImage("image/png", 600, 600, buffer.getvalue())


def record_threads(
    monkeypatch: pytest.MonkeyPatch,
    target: Any,
    name: str,
    threads: list[int],
    ours: Callable[[Any], bool],
) -> None:
    """Note the thread of each call whose first argument is the client's (the stand-ins
    run on the same loop and encode their own answers)."""
    original: Callable[..., Any] = getattr(target, name)

    def spy(*args: Any, **kwargs: Any) -> Any:
        if args and ours(args[0]):
            threads.append(threading.get_ident())
        return original(*args, **kwargs)

    monkeypatch.setattr(target, name, spy)


def spy_encoders(monkeypatch: pytest.MonkeyPatch, image: InputImage) -> list[int]:
    """The threads the client's base64 of `image` and JSON of its body ran in, filled in."""
    encoded_in: list[int] = []
    record_threads(monkeypatch, base64, "b64encode", encoded_in, lambda a: a is image.data)
    record_threads(
        monkeypatch,
        provider_http.json_module,
        "dumps",
        encoded_in,
        lambda a: isinstance(a, dict) and "prompt" in a,
    )
    return encoded_in


async def test_bfl_encodes_references_off_the_event_loop(
    fake_bfl: FakeBFL, monkeypatch: pytest.MonkeyPatch
) -> None:
    image = reference()
    encoded_in = spy_encoders(monkeypatch, image)
    client = BFLClient(BFL_KEY, fake_bfl.base_url, backoff_base=0.01, allow_loopback=True)
    try:
        variant = get_variant("klein-4b")
        await client.submit(variant, variant.validate("x", seed=1), [image], user_id=1)
    finally:
        await client.aclose()
    assert len(encoded_in) == 2 and threading.get_ident() not in encoded_in
    [submission] = fake_bfl.submissions
    assert base64.b64decode(str(submission.body["input_image"])) == image.data


async def test_aiml_encodes_references_off_the_event_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    image = reference()
    encoded_in = spy_encoders(monkeypatch, image)
    async with FakeAIML(api_key=AIML_KEY, latency=0.01, strict=True) as fake:
        client = AIMLClient(
            AIML_KEY, fake.base_url, read_timeout=5.0, backoff_base=0.001, allow_loopback=True
        )
        try:
            variant = get_variant("dev")
            await client.submit(variant, variant.validate("x", seed=3), [image], user_id=1)
        finally:
            await client.aclose()
        [request] = fake.requests
    assert len(encoded_in) == 2 and threading.get_ident() not in encoded_in
    [url] = request.body["image_urls"]
    assert base64.b64decode(url.partition(",")[2]) == image.data
