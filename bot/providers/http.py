"""HTTP pieces every provider client shares: backoff, Retry-After, capped streaming downloads."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Awaitable, Callable
from typing import TypeVar

import httpx

from bot.images import NotAnImage, inspect_image
from bot.providers.base import (
    OutputImage,
    ProviderUnavailable,
    ResultTooLarge,
    ResultUnavailable,
    SubmitOutcomeUnknown,
)

AnswerT = TypeVar("AnswerT")
JSON_HEADERS = {"content-type": "application/json"}


async def json_bytes(body: object) -> bytes:
    """A request body as JSON, encoded off the event loop: with large references it is
    tens of megabytes of base64. The same encoding httpx's `json=` uses."""

    def encode() -> bytes:
        text = json.dumps(body, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
        return text.encode("utf-8")

    return await asyncio.to_thread(encode)


def retry_after(headers: httpx.Headers) -> float | None:
    """Seconds from a `Retry-After: <seconds>` header, if it has a usable one."""
    try:
        return max(0.0, float(headers.get("retry-after", "")))
    except ValueError:
        return None


async def backoff(attempt: int, base: float, hinted: float | None = None) -> None:
    """Sleep before retry number `attempt` (1-based): the server's hint, else exponential;
    jittered so that many clients retrying together spread out."""
    delay = hinted if hinted is not None else base * 2 ** (attempt - 1)
    await asyncio.sleep(min(delay, 60.0) * random.uniform(0.8, 1.25))


async def read_capped(response: httpx.Response, cap: int, *, truncate: bool = False) -> bytes:
    """The body, streamed; over `cap` bytes raises ResultTooLarge (or, with `truncate`, for
    error bodies read only for their message, stops at the cap)."""
    chunks = bytearray()
    async for chunk in response.aiter_bytes():
        chunks.extend(chunk)
        if len(chunks) > cap:
            if truncate:
                return bytes(chunks[:cap])
            raise ResultTooLarge("answer exceeded the byte cap")
    return bytes(chunks)


def output_image(data: bytes) -> OutputImage:
    try:
        info = inspect_image(data)
    except NotAnImage as exc:
        raise ResultUnavailable(f"result is not an image: {exc}") from None
    return OutputImage(info.content_type, info.width, info.height, data)


async def download_image(
    http: httpx.AsyncClient,
    url: str,
    max_bytes: int,
    *,
    read_timeout: float | None = None,
    follow_redirects: bool = False,
) -> OutputImage:
    """Stream a result image, refusing it past `max_bytes`. Sent without any API key: result
    links live on delivery/CDN hosts that must never see one."""
    try:
        async with http.stream(
            "GET",
            url,
            follow_redirects=follow_redirects,
            timeout=read_timeout if read_timeout is not None else httpx.USE_CLIENT_DEFAULT,
        ) as response:
            if response.status_code != 200:
                raise ResultUnavailable(f"result download answered {response.status_code}")
            declared = response.headers.get("content-length")
            if declared and declared.isdigit() and int(declared) > max_bytes:
                raise ResultTooLarge(f"result is {declared} bytes")
            data = await read_capped(response, max_bytes)
    except httpx.TransportError as exc:
        raise ResultUnavailable(f"result download failed: {type(exc).__name__}") from None
    return output_image(data)


async def post_at_most_once(
    send: Callable[[], Awaitable[AnswerT]],
    *,
    status: Callable[[AnswerT], tuple[int, httpx.Headers]],
    service: str,
    attempts: int,
    backoff_base: float,
) -> AnswerT:
    """Send a request that may be billed. It is sent again only when it provably never
    arrived (a connect error) or the service said it did nothing (503). After anything else —
    another 5xx, a read timeout, a dropped connection — it may have been carried out, so it is
    never repeated: SubmitOutcomeUnknown."""
    for attempt in range(1, attempts + 1):
        try:
            answer = await send()
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            if attempt == attempts:
                raise ProviderUnavailable(
                    f"cannot connect to {service}: {type(exc).__name__}"
                ) from None
            await backoff(attempt, backoff_base)
            continue
        except httpx.TransportError as exc:
            raise SubmitOutcomeUnknown(f"no answer from {service}: {type(exc).__name__}") from None
        code, headers = status(answer)
        if code == 503 and attempt < attempts:
            await backoff(attempt, backoff_base, retry_after(headers))
            continue
        return answer
    raise AssertionError("unreachable")  # pragma: no cover
