"""AI/ML API client for the FLUX.2 family: one synchronous POST that answers with the images.

`POST {base}/v1/images/generations` with `Authorization: Bearer <key>` carries the whole
generation: the answer holds the finished images (as URLs or inline base64) and the usage.
There is no task to poll, so nothing can be recovered once the POST is in flight:

* connect failures (the request never left) are retried with jittered backoff;
* an explicit 503 is retried the same way: it is the documented "service unavailable"
  refusal, answered before any generation starts;
* a 429 is raised as `ProviderBusy` at once (the engine's lane waits and requeues);
* anything after the request was sent (read timeout, dropped connection, 500, 502, 504
  "generation timeout", an unreadable 200) may have been billed: `SubmitOutcomeUnknown`
  or a result error, never a second POST.

Usage (`meta.usage.credits_used`, or `tokens_used` as the docs' examples show) is counted
in AI/ML credits, documented as $1 = 2,000,000; ours are 1 credit = $0.01, so by default
20,000 AI/ML credits make one of ours (`AIML_UNITS_PER_CREDIT`, a constructor argument).

The engine today polls every submitted task. `AIMLClient.submit` therefore returns a
`FinishedSubmission` and keeps the images in memory under a synthetic task id: `poll`
reports them Ready at once and `download` hands them over, so the existing engine works
unchanged (see `FinishedSubmission` for the proposed protocol extension).

The body is built by `bot/providers/aiml_payload.py` from the options and limits declared in
`bot/providers/aiml_options.py`; this module sends it and reads the answer.

Why this file is long: one synchronous call has many endings (each read defensively), and
the account's balance check shares the client's key handling and error reading.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import re
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import httpx

from bot.errors import (
    InsufficientCredits,
    InvalidRequest,
    ProviderBusy,
    ProviderError,
    ProviderKeyRejected,
    ProviderRejected,
    ProviderUnavailable,
    ResultTooLarge,
    ResultUnavailable,
    SubmitOutcomeUnknown,
)
from bot.providers.aiml_options import BODY_FIELDS, MAX_NUM_IMAGES
from bot.providers.aiml_payload import payload_for
from bot.providers.base import (
    InputImage,
    OutputImage,
    Submission,
    TaskOutcome,
    TaskResult,
    WebhookRequest,
    reported_number,
    result_pixel_limit,
)
from bot.providers.egress import EgressPolicy, UnsafeProviderURL
from bot.providers.http import (
    ERROR_BODY_CAP,
    JSON_HEADERS,
    check_result_pixels,
    download_image,
    json_bytes,
    json_object,
    output_image,
    post_at_most_once,
    read_capped,
    request_capped,
    retry_after,
)
from bot.providers.transport import guarded_client
from bot.variants import JobParams, Variant

log = logging.getLogger(__name__)

DEFAULT_BASE_URL: Final = "https://api.aimlapi.com"
GENERATIONS_PATH: Final = "/v1/images/generations"
BALANCE_PATH: Final = "/v1/billing/balance"
# The AI/ML API's FAQ: "$1 USD = 2,000,000 credits"; one of our credits is $0.01.
AIML_UNITS_PER_USD: Final = 2_000_000
AIML_UNITS_PER_CREDIT: Final = AIML_UNITS_PER_USD / 100

_FIELD_IN_MESSAGE: Final = re.compile(
    r"\b(" + "|".join(BODY_FIELDS) + r")((?:\.[A-Za-z_]\w*|\[\d+\])*)"
)
_RESULT_SCHEME: Final = "aiml-result:"


@dataclass(frozen=True)
class Generation:
    """A finished generation: the images, and what it cost."""

    model: str
    images: tuple[OutputImage, ...]
    cost: float | None  # our credits (1 = $0.01), None when the answer reported no usage
    usage: float | None  # as reported, in AI/ML credits
    usage_field: str | None  # which field it came from
    failed_images: int = 0  # results that could not be fetched or decoded


@dataclass(frozen=True)
class Balance:
    """The account's balance as `GET /v1/billing/balance` reports it."""

    units: float  # AI/ML credits left ($1 = 2,000,000)
    credits: float  # the same in ours (1 = $0.01)
    low: bool  # the API's own `lowBalance` flag (its threshold is set in the AI/ML dashboard)


@dataclass(frozen=True, kw_only=True)
class FinishedSubmission(Submission):
    """A `Submission` whose task already finished (the AI/ML API is synchronous).

    Today's engine reads only `task_id`/`polling_url`/`cost` and then polls, which `poll`
    answers from memory. With the proposed `Submission.result: TaskResult | None` field the
    engine completes the job from `result` without polling, still fetching its
    `sample_urls` through `download` (served from memory here): this class keeps working
    unchanged (its `result` narrows the new base field) and can then become plain
    `Submission(..., result=...)`. `images` is for callers outside the engine.
    """

    result: TaskResult
    images: tuple[OutputImage, ...] = ()


class ResultLost(ResultUnavailable):
    """A finished result was no longer held in memory (the bot restarted, or it expired)."""

    user_message = (
        "The image was made, but the bot lost it before saving it (it may have restarted). "
        "Please try again."
    )


# ---------------------------------------------------------------------- usage


def read_usage(data: Mapping[str, Any]) -> tuple[float | None, str | None]:
    """(AI/ML credits, field) from an answer: `meta.usage.usd_spent` in dollars where present
    (newer answers), else `meta.usage.credits_used` (the schema),
    `meta.usage.tokens_used` (the docs' examples), else a positive `usage.total_tokens`
    (the generic page's OpenAI-style example; its zeros would mean "unknown", not free)."""
    meta = data.get("meta")
    usage = meta.get("usage") if isinstance(meta, dict) else None
    if isinstance(usage, dict):
        # Dollars, where the answer has them (bfl-tools.md: preferred): the same units.
        dollars = reported_number(usage.get("usd_spent"))
        if dollars is not None and dollars >= 0:
            return dollars * AIML_UNITS_PER_USD, "usd_spent"
        for name in ("credits_used", "tokens_used"):
            value = reported_number(usage.get(name))
            if value is not None and value >= 0:
                return value, name  # may be infinite: the engine does not believe that
    legacy = data.get("usage")
    if isinstance(legacy, dict):
        value = reported_number(legacy.get("total_tokens"))
        if value is not None and value > 0:
            return value, "total_tokens"
    return None, None


def usage_to_credits(units: float, units_per_credit: float = AIML_UNITS_PER_CREDIT) -> float:
    """AI/ML credits to ours (1 credit = $0.01), kept to 1/10,000 of a credit."""
    return round(units / units_per_credit, 4)


# ---------------------------------------------------------------------- the client


@dataclass
class _Held:
    """A finished result kept until the engine downloads it (see `FinishedSubmission`)."""

    result: TaskResult
    images: list[OutputImage | None]
    created: float = field(default_factory=time.monotonic)


class AIMLClient:
    """One shared httpx client for every AI/ML API call. The API key is sent per request,
    and only to the API host: result links live on CDN hosts that must never see it."""

    name = "aiml"
    supports_webhooks = False

    def __init__(
        self,
        api_key: str,
        base_url: str = DEFAULT_BASE_URL,
        *,
        read_timeout: float = 300.0,
        connect_timeout: float = 10.0,
        download_timeout: float = 60.0,
        max_result_bytes: int = 25 * 1024 * 1024,
        max_connections: int = 64,
        connect_attempts: int = 4,
        backoff_base: float = 0.5,
        units_per_credit: float = AIML_UNITS_PER_CREDIT,
        hold_results_for: float = 900.0,
        allow_loopback: bool = False,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        """`read_timeout` bounds how long one generation may take to answer (the API holds
        the connection open while it works: set it from a setting, minutes not seconds)."""
        if units_per_credit <= 0:
            raise ValueError("units_per_credit must be positive")
        self._api_key = api_key
        self.base_url = base_url.rstrip("/")
        # Raises ValueError for a base the key may not travel to (http, another port).
        self._policy = EgressPolicy(self.base_url, allow_loopback=allow_loopback)
        self._max_result_bytes = max_result_bytes
        self._download_timeout = download_timeout
        self._connect_attempts = max(1, connect_attempts)
        self._backoff_base = backoff_base
        self.units_per_credit = units_per_credit
        self._hold_results_for = hold_results_for
        self._held: dict[str, _Held] = {}
        self._owns_http = http is None
        self._http = http or guarded_client(
            # pool: a request waiting for a free connection waits as long as a generation.
            timeout=httpx.Timeout(
                connect=connect_timeout, read=read_timeout, write=60.0, pool=read_timeout
            ),
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=32),
            allow_loopback=allow_loopback,
        )

    async def aclose(self) -> None:
        if self._owns_http:
            await self._http.aclose()

    def _key_header(self, url: str) -> dict[str, str]:
        self._policy.require_key_destination(url, "the AI/ML API key")
        return {"authorization": f"Bearer {self._api_key}"}

    # ------------------------------------------------------------------ account

    async def balance(self) -> Balance:
        """The account's balance: what the key checks read (bot/providers/accounts.py).
        Raises `ProviderKeyRejected` (401), `InsufficientCredits` (403, the documented "out
        of credits"), `ProviderUnavailable` (unreachable, 5xx) or `ProviderError`."""
        url = f"{self.base_url}{BALANCE_PATH}"
        try:
            answer = await request_capped(self._http, "GET", url, headers=self._key_header(url))
        except httpx.TransportError as exc:
            raise ProviderUnavailable(f"balance check failed: {type(exc).__name__}") from None
        if answer.status != 200:
            error = _error_for(answer.status, answer.body, answer.headers, self._api_key)
            if isinstance(error, SubmitOutcomeUnknown | ProviderRejected):  # nothing was sent
                raise ProviderUnavailable(str(error))
            raise error
        data = json_object(answer.body)
        units = reported_number(data.get("balance"))
        if units is None:
            raise ProviderError("balance answer has no number")
        return Balance(
            units=units,
            credits=usage_to_credits(units, self.units_per_credit),
            low=data.get("lowBalance") is True,
        )

    # ------------------------------------------------------------------ generate

    async def generate(
        self, payload: Mapping[str, Any], *, max_pixels: int | None = None
    ) -> Generation:
        """POST one generation (a `build_payload` body) and return its images and cost.
        An image whose header says more than `max_pixels` is refused like any unusable one.

        Raises `ProviderBusy` (429), `ProviderUnavailable` (unreachable, or 503 after the
        retries), `ProviderRejected` (400), `ProviderKeyRejected` (401),
        `InsufficientCredits` (403), `SubmitOutcomeUnknown` (sent, then no usable answer:
        may be billed) or `ResultUnavailable`/`ResultTooLarge` (generated, not usable)."""
        model = str(payload.get("model", ""))
        data = await self._post(dict(payload))
        usage, usage_field = read_usage(data)
        if usage is None:
            cost = None
        elif usage_field == "usd_spent":  # dollars: 1 of our credits is $0.01, whatever the rate
            cost = usage_to_credits(usage, AIML_UNITS_PER_CREDIT)
        else:
            cost = usage_to_credits(usage, self.units_per_credit)
        items = data.get("data")
        if not isinstance(items, list) or not items:
            raise ResultUnavailable("the answer carries no images")
        outcomes = await asyncio.gather(
            *(self._result_image(item, max_pixels) for item in items), return_exceptions=True
        )
        images: list[OutputImage] = []
        errors: list[BaseException] = []
        for outcome in outcomes:
            if isinstance(outcome, OutputImage):
                images.append(outcome)
            elif isinstance(outcome, ProviderError):
                errors.append(outcome)
            else:
                raise outcome  # a bug or a cancellation: do not hide it
        if not images:
            raise errors[0]
        if errors:
            # The user paid for every image: deliver the ones we have rather than none.
            log.warning(
                "%s: %d of %d results unusable (%s)",
                model,
                len(errors),
                len(items),
                "; ".join(str(e) for e in errors),
            )
        log.info("%s: %d image(s), usage %s %s", model, len(images), usage, usage_field)
        return Generation(model, tuple(images), cost, usage, usage_field, len(errors))

    async def _post(self, body: dict[str, Any]) -> dict[str, Any]:
        url = f"{self.base_url}{GENERATIONS_PATH}"
        content = await json_bytes(body)

        async def send() -> tuple[int, httpx.Headers, bytes]:
            async with self._http.stream(
                "POST",
                url,
                content=content,
                headers={**self._key_header(url), **JSON_HEADERS},
                follow_redirects=False,
            ) as response:
                if response.status_code == 200:
                    raw = await self._read_answer(response)
                else:  # error bodies are read only for their message
                    raw = await read_capped(response, ERROR_BODY_CAP, truncate=True)
                return response.status_code, response.headers, raw

        status, headers, raw = await post_at_most_once(
            send,
            status=lambda answer: (answer[0], answer[1]),
            service="the AI/ML API",
            attempts=self._connect_attempts,
            backoff_base=self._backoff_base,
        )
        if status == 200:
            return _json_object(raw)
        raise _error_for(status, raw, headers, self._api_key)

    async def _read_answer(self, response: httpx.Response) -> bytes:
        # Up to four inline images, base64-inflated, plus the JSON around them.
        cap = self._max_result_bytes * MAX_NUM_IMAGES * 4 // 3 + ERROR_BODY_CAP
        return await read_capped(response, cap)

    async def _result_image(self, item: Any, max_pixels: int | None) -> OutputImage:
        if not isinstance(item, dict):
            raise ResultUnavailable("a result entry is not an object")
        url = item.get("url")
        if isinstance(url, str) and url:
            return await self.download(url, max_pixels=max_pixels)
        inline = item.get("b64_json")
        if isinstance(inline, str) and inline:
            return self._decode_inline(inline, max_pixels)
        raise ResultUnavailable("a result entry has neither url nor b64_json")

    def _decode_inline(self, text: str, max_pixels: int | None) -> OutputImage:
        if text.startswith("data:"):
            text = text.partition(",")[2]
        text = "".join(text.split())
        # Refuse before decoding: 4 base64 characters carry 3 bytes.
        if len(text) // 4 * 3 > self._max_result_bytes + 3:
            raise ResultTooLarge("inline result exceeds the byte cap")
        try:
            data = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
        except (binascii.Error, ValueError):
            raise ResultUnavailable("inline result is not valid base64") from None
        if len(data) > self._max_result_bytes:
            raise ResultTooLarge("inline result exceeds the byte cap")
        return output_image(data, max_pixels)

    # ------------------------------------------------------------------ Provider protocol

    async def submit(
        self,
        variant: Variant,
        params: JobParams,
        inputs: list[InputImage],
        *,
        user_id: int,
        webhook: WebhookRequest | None = None,  # synchronous: nothing to call back
    ) -> Submission:
        """Generate at once (the API is synchronous); the result is held for `poll`."""
        try:
            # Base64 of the references: CPU work kept off the event loop.
            body = await asyncio.to_thread(payload_for, variant, params, inputs)
        except InvalidRequest as exc:
            # A catalogue/model mismatch: refuse it as the API would, before paying.
            raise ProviderRejected(str(exc)) from None
        limit = result_pixel_limit(variant, params, has_references=bool(inputs))
        generation = await self.generate(body, max_pixels=limit)
        self._expire_held()
        task_id = f"aiml-{uuid.uuid4().hex}"
        result = TaskResult(
            outcome=TaskOutcome.READY,
            raw_status="Ready",
            sample_urls=tuple(
                f"{_RESULT_SCHEME}{task_id}/{n}" for n in range(len(generation.images))
            ),
            seed=params.seed,  # the API does not echo it; we always send one
            cost=generation.cost,
            details={"model": generation.model, "usage": generation.usage},
        )
        self._held[task_id] = _Held(result, list(generation.images))
        return FinishedSubmission(
            task_id=task_id,
            polling_url=None,
            cost=generation.cost,
            result=result,
            images=generation.images,
        )

    async def poll(self, task_id: str, polling_url: str | None) -> TaskResult:
        """The held result of a finished `submit`. There is nothing to ask the API: a task
        not held here (a restart between the answer and the database) is lost for good."""
        self._expire_held()
        held = self._held.get(task_id)
        if held is None:
            raise ResultLost(f"no held result for {task_id}")
        return held.result

    async def download(self, url: str, *, max_pixels: int | None = None) -> OutputImage:
        """A held image (`aiml-result:` links from `poll`), or a result URL streamed up to
        the byte cap; either refused past `max_pixels`. No API key: result URLs are on CDN
        hosts."""
        if url.startswith(_RESULT_SCHEME):
            image = self._take_held(url.removeprefix(_RESULT_SCHEME))
            check_result_pixels(image.width, image.height, max_pixels)
            return image
        return await download_image(
            self._http,
            url,
            self._max_result_bytes,
            policy=self._policy,
            max_pixels=max_pixels,
            read_timeout=self._download_timeout,
        )

    def _take_held(self, ref: str) -> OutputImage:
        task_id, _, index = ref.partition("/")
        held = self._held.get(task_id)
        n = int(index) if index.isdigit() else -1
        image = held.images[n] if held is not None and 0 <= n < len(held.images) else None
        if held is None or image is None:
            raise ResultLost(f"no held image {ref}")
        held.images[n] = None  # handed over: the engine stores it in the database
        if all(slot is None for slot in held.images):
            del self._held[task_id]
        return image

    def _expire_held(self) -> None:
        cutoff = time.monotonic() - self._hold_results_for
        for task_id in [t for t, held in self._held.items() if held.created < cutoff]:
            log.warning("dropping result %s: not collected in time", task_id)
            del self._held[task_id]


# ---------------------------------------------------------------------- helpers


def _json_object(raw: bytes) -> dict[str, Any]:
    try:
        data = json.loads(raw)
    except ValueError:
        # A 200 means the generation ran (and was billed), but we cannot read it.
        raise ResultUnavailable("the answer is not JSON") from None
    if not isinstance(data, dict):
        raise ResultUnavailable("the answer is not a JSON object")
    return data


def _clean(text: str, api_key: str) -> str:
    """An API message made safe to log and show: one line, short, never the key."""
    if api_key:
        text = text.replace(api_key, "***")
    text = " ".join(text.split())
    return text if len(text) <= 300 else text[:297] + "..."


def _error_message(raw: bytes) -> tuple[str, str | None]:
    """(message, field) of the documented error body `{message, path, requestId, statusCode,
    timestamp}`. The docs define `path` as the API path called, so the field is found in
    the message; a `path` that is not an URL path is taken as the field itself."""
    try:
        data = json.loads(raw)
    except ValueError:
        return "", None
    if not isinstance(data, dict):
        return "", None
    message = data.get("message")
    if isinstance(message, list):  # NestJS-style validation lists
        message = "; ".join(str(item) for item in message)
    text = str(message) if isinstance(message, str | int | float) else ""
    path = data.get("path")
    if isinstance(path, str) and path and not path.startswith("/"):
        return text, path
    match = _FIELD_IN_MESSAGE.search(text)
    return text, (match.group(1) + match.group(2)) if match else None


def _error_for(status: int, raw: bytes, headers: httpx.Headers, api_key: str) -> ProviderError:
    message, field_name = _error_message(raw)
    message = _clean(message, api_key)
    summary = f"HTTP {status}: {message}" if message else f"HTTP {status}"
    if status in (402, 403):  # the AI/ML API documents 403 as "out of credits"
        return InsufficientCredits(summary)
    if status == 401:
        return ProviderKeyRejected(summary)
    if status == 429:
        return ProviderBusy(summary, retry_after=retry_after(headers))
    if 300 <= status < 400:
        # Never followed: the key would go with it. Whether it ran is unknown, so no retry.
        return UnsafeProviderURL(f"{summary} (a redirect, not followed)")
    if status == 503:
        # Refused before any work (documented "service unavailable"): nothing was made.
        return ProviderUnavailable(summary)
    if 400 <= status < 500:
        return ProviderRejected(message or f"invalid request (HTTP {status})", field=field_name)
    # 500, 502, 504 "generation timeout", anything unexpected: it may have run and be billed.
    return SubmitOutcomeUnknown(summary)
