"""HTTP pieces every provider client shares: backoff, Retry-After, capped streaming downloads."""

from __future__ import annotations

import asyncio
import json as json_module
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final, TypeVar
from urllib.parse import urljoin

import httpx

from bot.errors import (
    AnswerTooLarge,
    ProviderError,
    ProviderUnavailable,
    ResultTooLarge,
    ResultUnavailable,
    SubmitOutcomeUnknown,
)
from bot.images import NotAnImage, inspect_image
from bot.providers.base import OutputImage
from bot.providers.egress import EgressPolicy, UnsafeProviderURL, link_host, same_host

AnswerT = TypeVar("AnswerT")
JSON_HEADERS = {"content-type": "application/json"}


async def json_bytes(body: object) -> bytes:
    """A request body as JSON, encoded off the event loop: with large references it is
    tens of megabytes of base64. The same encoding httpx's `json=` uses."""

    def encode() -> bytes:
        text = json_module.dumps(body, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
        return text.encode("utf-8")

    return await asyncio.to_thread(encode)


# A status or submit answer is about 1 KB; a few MiB leaves room for verbose `details` or an
# inline preview, and stops a hostile endless body long before memory suffers.
MAX_JSON_ANSWER_BYTES: Final = 4 * 1024 * 1024
# Error bodies are read only for their message.
ERROR_BODY_CAP: Final = 64 * 1024
MAX_DOWNLOAD_REDIRECTS: Final = 3


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


async def read_capped(
    response: httpx.Response,
    cap: int,
    *,
    truncate: bool = False,
    too_large: type[ProviderError] = ResultTooLarge,
) -> bytes:
    """The body, streamed; over `cap` bytes raises `too_large` (or, with `truncate`, for
    error bodies read only for their message, stops at the cap)."""
    declared = response.headers.get("content-length")
    if not truncate and declared and declared.isdigit() and int(declared) > cap:
        raise too_large(f"answer declares {declared} bytes, over the cap of {cap}")
    chunks = bytearray()
    async for chunk in response.aiter_bytes():
        chunks.extend(chunk)
        if len(chunks) > cap:
            if truncate:
                return bytes(chunks[:cap])
            raise too_large(f"answer exceeded the cap of {cap} bytes")
    return bytes(chunks)


@dataclass(frozen=True)
class Answer:
    """A provider's answer, its body read up to a cap."""

    status: int
    headers: httpx.Headers
    body: bytes


async def request_capped(
    http: httpx.AsyncClient,
    method: str,
    url: str,
    *,
    cap: int = MAX_JSON_ANSWER_BYTES,
    headers: dict[str, str] | None = None,
    params: dict[str, str] | None = None,
    json: Any = None,
    content: bytes | None = None,
) -> Answer:
    """One API call, never following a redirect, its body streamed and capped: a 200's body
    past `cap` raises AnswerTooLarge, any other answer's is cut at ERROR_BODY_CAP."""
    async with http.stream(
        method,
        url,
        headers=headers,
        params=params,
        json=json,
        content=content,
        follow_redirects=False,
    ) as response:
        if response.status_code == 200:
            body = await read_capped(response, cap, too_large=AnswerTooLarge)
        else:
            body = await read_capped(response, ERROR_BODY_CAP, truncate=True)
        return Answer(response.status_code, response.headers, body)


def json_object(body: bytes) -> dict[str, Any]:
    """A JSON object from a body, or {} when it is not one."""
    try:
        data = json_module.loads(body)
    except (ValueError, RecursionError):
        return {}
    return data if isinstance(data, dict) else {}


class UntrustedResultSize(ResultTooLarge):
    """A result whose header claims far more pixels than the request asked for (a 10000²
    PNG for 1 MP): refused from the header alone, before anything decodes it, as shrinking
    it to fit Discord would cost hundreds of MB and seconds of CPU. Shown as ResultTooLarge."""


def check_result_pixels(width: int, height: int, max_pixels: int | None) -> None:
    """Raise UntrustedResultSize when `width`×`height` is over `max_pixels` (None: no limit;
    see `bot.providers.base.result_pixel_limit`)."""
    if max_pixels is not None and width * height > max_pixels:
        raise UntrustedResultSize(
            f"result is {width}×{height}, over the {max_pixels} pixels the request may get"
        )


def output_image(data: bytes, max_pixels: int | None = None) -> OutputImage:
    """A result from its bytes, reading only the header: its type, and a size within
    `max_pixels` (UntrustedResultSize otherwise)."""
    try:
        info = inspect_image(data)
    except NotAnImage as exc:
        raise ResultUnavailable(f"result is not an image: {exc}") from None
    check_result_pixels(info.width, info.height, max_pixels)
    return OutputImage(info.content_type, info.width, info.height, data)


async def download_image(
    http: httpx.AsyncClient,
    url: str,
    max_bytes: int,
    *,
    policy: EgressPolicy,
    max_pixels: int | None = None,
    read_timeout: float | None = None,
    max_redirects: int = MAX_DOWNLOAD_REDIRECTS,
) -> OutputImage:
    """Stream a result image, refusing it past `max_bytes` or, from its header, past
    `max_pixels`. Sent without any API key: result links live on delivery/CDN hosts that
    must never see one. The link must pass `policy` (well-formed, https, default port,
    public addresses); a redirect is followed only to the same host, each hop checked
    again."""
    timeout = read_timeout if read_timeout is not None else httpx.USE_CLIENT_DEFAULT
    for _ in range(max_redirects + 1):
        await policy.check_fetch(url)
        try:
            async with http.stream("GET", url, follow_redirects=False, timeout=timeout) as response:
                if response.is_redirect:
                    try:
                        target = urljoin(url, response.headers["location"])
                    except ValueError:
                        raise UnsafeProviderURL(
                            "result link redirects to a malformed link"
                        ) from None
                    if not same_host(url, target):
                        raise UnsafeProviderURL(
                            f"result link redirects to another host ({link_host(target)})"
                        )
                    url = target
                    continue
                if response.status_code != 200:
                    raise ResultUnavailable(f"result download answered {response.status_code}")
                data = await read_capped(response, max_bytes)
        except httpx.TransportError as exc:
            raise ResultUnavailable(f"result download failed: {type(exc).__name__}") from None
        return output_image(data, max_pixels)
    raise ResultUnavailable("result link redirects too many times")


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
