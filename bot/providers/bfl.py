"""Black Forest Labs API client: async submit, poll the returned `polling_url`, download."""

from __future__ import annotations

import asyncio
import base64
import copy
import hashlib
import hmac
import logging
import secrets
from collections.abc import Mapping
from typing import Any

import httpx

from bot.errors import (
    AnswerTooLarge,
    InsufficientCredits,
    ProviderAccessDenied,
    ProviderBusy,
    ProviderError,
    ProviderKeyRejected,
    ProviderRejected,
    ProviderUnavailable,
    SubmitOutcomeUnknown,
)
from bot.providers.base import (
    InputImage,
    OutputImage,
    Submission,
    TaskOutcome,
    TaskResult,
    WebhookRequest,
    reported_number,
)
from bot.providers.egress import EgressPolicy, UnsafeProviderURL, link_host
from bot.providers.http import (
    JSON_HEADERS,
    Answer,
    download_image,
    json_bytes,
    json_object,
    post_at_most_once,
    request_capped,
    retry_after,
)
from bot.providers.transport import guarded_client
from bot.variants import JobParams, Variant

log = logging.getLogger(__name__)

_RUNNING = {"pending", "reasoning", "generating", "queued", "processing", "in progress"}
_READY = {"ready", "success", "succeeded"}
_MODERATED = {"request moderated", "content moderated"}
_FAILED = {"error", "failed", "failure"}
_NOT_FOUND = {"task not found"}


def classify_status(status: str) -> TaskOutcome:
    lowered = status.strip().lower()
    if lowered in _RUNNING:
        return TaskOutcome.RUNNING
    if lowered in _READY:
        return TaskOutcome.READY
    if lowered in _MODERATED or lowered.endswith("moderated"):
        return TaskOutcome.MODERATED
    if lowered in _FAILED:
        return TaskOutcome.FAILED
    if lowered in _NOT_FOUND:
        return TaskOutcome.NOT_FOUND
    return TaskOutcome.UNKNOWN


def parse_task_payload(payload: Mapping[str, Any]) -> TaskResult:
    """Read a get_result (or webhook) body defensively: fields may be missing or renamed."""
    raw_status = str(payload.get("status") or "")
    outcome = classify_status(raw_status)
    result = payload.get("result") if isinstance(payload.get("result"), dict) else {}
    assert isinstance(result, dict)
    sample = result.get("sample")
    samples: tuple[str, ...] = ()
    if isinstance(sample, str) and sample:
        samples = (sample,)
    elif isinstance(sample, list):
        samples = tuple(s for s in sample if isinstance(s, str) and s)
    if outcome is TaskOutcome.READY and not samples:
        outcome = TaskOutcome.FAILED
        raw_status = f"{raw_status} (no image in result)"
    seed = result.get("seed")
    cost = payload.get("cost")
    details = payload.get("details")
    progress = payload.get("progress")
    return TaskResult(
        outcome=outcome,
        raw_status=raw_status,
        sample_urls=samples,
        seed=seed if isinstance(seed, int) and not isinstance(seed, bool) else None,
        cost=reported_number(cost),
        details=details if isinstance(details, dict) else {},
        progress=reported_number(progress),
    )


def hash_user(user_id: int, key: bytes) -> str:
    """BFL's `user` field: an opaque, stable id per member. Keyed (HMAC), so nobody holding
    the id can get back to the Discord account by hashing every Discord id."""
    return hmac.new(key, f"fluxcord-user:{user_id}".encode(), hashlib.sha256).hexdigest()[:32]


def build_payload(
    variant: Variant,
    params: JobParams,
    inputs: list[InputImage],
    *,
    user: str,
    webhook: WebhookRequest | None = None,
) -> dict[str, Any]:
    """The exact JSON body for `variant.endpoint`; `user` is the member's `hash_user`."""
    body: dict[str, Any] = {"prompt": params.prompt, "seed": params.seed}
    if params.width and params.height:
        body["width"] = params.width
        body["height"] = params.height
    for spec in variant.options:
        name, value = spec.to_api(params.options[spec.name])
        body[name] = value
    for index, image in enumerate(inputs):
        field = "input_image" if index == 0 else f"input_image_{index + 1}"
        body[field] = base64.b64encode(image.data).decode("ascii")
    if params.lora is not None:  # a server LoRA: its `-finetuned` endpoint takes these too
        body["finetune_id"] = params.lora.finetune_id
        body["finetune_strength"] = params.lora.strength
    body["user"] = user
    if webhook is not None:
        body["webhook_url"] = webhook.url
        body["webhook_secret"] = webhook.secret
    return body


def build_outpaint_payload(
    variant: Variant,
    params: JobParams,
    inputs: list[InputImage],
    *,
    user: str,
    webhook: WebhookRequest | None = None,
) -> dict[str, Any]:
    """The body for BFL's outpainting route: only its schema's fields, since it refuses any
    other (`additionalProperties: false`). No seed, no webhook (it has neither); the
    prompt only when there is one (retention may have removed it)."""
    del webhook  # the route has no webhook fields: such jobs are polled
    if len(inputs) != 1 or not (params.width and params.height):
        raise ValueError("outpainting needs exactly one input image and a canvas size")
    body: dict[str, Any] = {
        "input_image": base64.b64encode(inputs[0].data).decode("ascii"),
        "width": params.width,
        "height": params.height,
        "auto_crop": False,  # our canvas always holds the whole input (bot/tools/canvas.py)
    }
    for spec in variant.options:
        name, value = spec.to_api(params.options[spec.name])
        body[name] = value
    if params.prompt:
        body["prompt"] = params.prompt
    body["user"] = user  # the member's `hash_user`, as for the image routes
    return body


# Routes whose body is not the FLUX.2 image schema, by endpoint.
_PAYLOAD_BUILDERS = {"/v1/flux-tools/outpainting-v1": build_outpaint_payload}


def endpoint_for(variant: Variant, params: JobParams) -> str:
    """Where the request goes: the LoRA's `-finetuned` endpoint when it uses one."""
    return params.lora.endpoint if params.lora is not None else variant.endpoint


class BFLClient:
    """One shared httpx client for every BFL call. The API key is sent per request, and only
    to BFL API hosts over https (see bot/providers/egress.py): result links live on delivery
    hosts that must never see it. `allow_loopback` is for the tests' loopback stand-in only."""

    name = "bfl"
    supports_webhooks = True

    def __init__(
        self,
        api_key: str,
        base_url: str,
        *,
        max_result_bytes: int = 25 * 1024 * 1024,
        max_connections: int = 64,
        submit_attempts: int = 4,
        backoff_base: float = 0.5,
        allow_loopback: bool = False,
        http: httpx.AsyncClient | None = None,
        user_key: bytes | None = None,
    ) -> None:
        self._api_key = api_key
        # The key of `hash_user` (USER_HASH_SECRET, or the fleet's own: bot/services.py); a
        # client made without one (a test, a bench) hashes with a key of its own.
        self._user_key = user_key if user_key is not None else secrets.token_bytes(32)
        self.base_url = base_url.rstrip("/")
        # Raises ValueError for a base the key may not travel to (http, another port).
        self._policy = EgressPolicy(self.base_url, allow_loopback=allow_loopback, bfl=True)
        self._max_result_bytes = max_result_bytes
        self._submit_attempts = submit_attempts
        self._backoff_base = backoff_base
        self._http = http or guarded_client(
            timeout=httpx.Timeout(connect=10.0, read=60.0, write=60.0, pool=60.0),
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=32),
            allow_loopback=allow_loopback,
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    def with_key(self, api_key: str) -> BFLClient:
        """A client for another account's key over this one's connection pool (one shared
        HTTP client per provider). Close only the first."""
        other = copy.copy(self)
        other._api_key = api_key
        return other

    def user_tag(self, user_id: int) -> str:
        """What BFL's `user` field says for this member."""
        return hash_user(user_id, self._user_key)

    def _key_header(self, url: str) -> dict[str, str]:
        self._policy.require_key_destination(url, "the BFL key")
        return {"x-key": self._api_key}

    def _trusted_polling_url(self, task_id: str, polling_url: str | None) -> str | None:
        """The polling_url if the key may go there, else None (poll `get_result` on the
        configured host instead): a hostile or malformed polling_url is never fetched."""
        if polling_url is None or self._policy.may_receive_key(polling_url):
            return polling_url
        log.warning(
            "task %s: ignoring a polling_url on an untrusted host (%.100s); polling get_result",
            task_id,
            link_host(polling_url),
        )
        return None

    async def submit(
        self,
        variant: Variant,
        params: JobParams,
        inputs: list[InputImage],
        *,
        user_id: int,
        webhook: WebhookRequest | None = None,
    ) -> Submission:
        # Base64 of up to 8 large references: CPU work kept off the event loop.
        build = _PAYLOAD_BUILDERS.get(variant.endpoint, build_payload)
        body = await asyncio.to_thread(
            build, variant, params, inputs, user=self.user_tag(user_id), webhook=webhook
        )
        return await self.submit_body(endpoint_for(variant, params), body)

    async def submit_body(self, endpoint: str, body: dict[str, Any]) -> Submission:
        url = f"{self.base_url}{endpoint}"
        headers = {**self._key_header(url), **JSON_HEADERS}
        content = await json_bytes(body)  # tens of MiB with references: off the event loop
        try:
            answer = await post_at_most_once(
                lambda: request_capped(self._http, "POST", url, content=content, headers=headers),
                status=lambda answer: (answer.status, answer.headers),
                service="BFL",
                attempts=self._submit_attempts,
                backoff_base=self._backoff_base,
            )
        except AnswerTooLarge:
            # A 200 we could not read: the task exists (and is billed) but has no known id.
            raise SubmitOutcomeUnknown("submit answer exceeded the byte cap") from None
        return self._parse_submit(answer)

    def _parse_submit(self, answer: Answer) -> Submission:
        if answer.status == 200:
            data = json_object(answer.body)
            task_id = data.get("id")
            if not isinstance(task_id, str) or not task_id:
                raise SubmitOutcomeUnknown("submit answer has no task id")
            polling_url = data.get("polling_url")
            return Submission(
                task_id=task_id,
                polling_url=self._trusted_polling_url(
                    task_id, polling_url if isinstance(polling_url, str) and polling_url else None
                ),
                cost=reported_number(data.get("cost")),
            )
        raise _error_for(answer, during_submit=True)

    async def poll(self, task_id: str, polling_url: str | None) -> TaskResult:
        """One status reading. Transient failures raise ProviderUnavailable: poll again later."""
        polling_url = self._trusted_polling_url(task_id, polling_url)
        if polling_url:
            url, query = polling_url, None
        else:
            url, query = f"{self.base_url}/v1/get_result", {"id": task_id}
        try:
            answer = await request_capped(
                self._http, "GET", url, params=query, headers=self._key_header(url)
            )
        except httpx.TransportError as exc:
            raise ProviderUnavailable(f"poll failed: {type(exc).__name__}") from None
        if answer.status != 200:
            raise _error_for(answer, during_submit=False)
        result = parse_task_payload(json_object(answer.body))
        if result.outcome is TaskOutcome.UNKNOWN:
            log.warning(
                "task %s has an unknown status %r; still waiting", task_id, result.raw_status
            )
        return result

    async def download(self, url: str, *, max_pixels: int | None = None) -> OutputImage:
        """Stream the signed result up to the byte cap (and `max_pixels`, from its header).
        No API key: not a BFL API host."""
        return await download_image(
            self._http, url, self._max_result_bytes, policy=self._policy, max_pixels=max_pixels
        )

    async def credits(self) -> float:
        url = f"{self.base_url}/v1/credits"
        try:
            answer = await request_capped(self._http, "GET", url, headers=self._key_header(url))
        except httpx.TransportError as exc:
            raise ProviderUnavailable(f"credits check failed: {type(exc).__name__}") from None
        if answer.status != 200:
            raise _error_for(answer, during_submit=False)
        value = reported_number(json_object(answer.body).get("credits"))
        if value is None:
            raise ProviderError("credits answer has no number")
        return value


def _detail_text(data: Mapping[str, Any]) -> tuple[str, str | None]:
    """BFL errors carry `detail` as a string or as FastAPI's list of {loc, msg, type}."""
    detail = data.get("detail")
    if isinstance(detail, list) and detail and isinstance(detail[0], dict):
        first = detail[0]
        loc = first.get("loc")
        field = str(loc[-1]) if isinstance(loc, list) and loc else None
        return str(first.get("msg") or "invalid value"), field
    if isinstance(detail, str):
        return detail, None
    return "", None


def _error_for(answer: Answer, *, during_submit: bool) -> ProviderError:
    status = answer.status
    message, field = _detail_text(json_object(answer.body))
    summary = f"HTTP {status}: {message}" if message else f"HTTP {status}"
    if 300 <= status < 400:
        # API calls never follow redirects: wherever it points, the key would go with it.
        return UnsafeProviderURL(f"{summary} (a redirect, not followed)")
    if status == 402:
        return InsufficientCredits(summary)
    if status == 401:  # BFL's answer to an unknown key, on every route
        return ProviderKeyRejected(summary)
    if status == 403:
        return ProviderAccessDenied(summary)
    if status in (400, 422):
        return ProviderRejected(message or "invalid request", field=field)
    if status == 429:
        return ProviderBusy(summary, retry_after=retry_after(answer.headers))
    if status == 503 or not during_submit:
        return ProviderUnavailable(summary)
    # Any other 5xx answer to a submit: the task may exist and be billed.
    return SubmitOutcomeUnknown(summary)
