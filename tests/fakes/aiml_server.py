"""A test stand-in for the AI/ML API's FLUX.2 image models.

``FakeAIML`` is a real aiohttp server bound to ``127.0.0.1`` on ephemeral ports. It runs in
the caller's event loop, so pytest fixtures and benchmark scripts can drive it alongside the
code under test::

    async with FakeAIML(api_key="test-aiml-key", latency=0.02) as fake:
        client = AIMLClient("test-aiml-key", fake.base_url, allow_loopback=True)
        ...

It follows the documented contract (``/work/shared/reference/aiml-api.md`` and the original
pages in ``/work/shared/seeds/000``–``003``): one synchronous endpoint that answers with the
finished images, no polling, no webhooks.

Endpoints
---------
* ``POST /v1/images/generations`` (API port, ``base_url``) for the seven models in ``MODELS``:
  ``blackforestlabs/flux-2``, ``-edit``, ``-lora``, ``-lora-edit``, ``-pro``, ``-pro-edit``
  and ``-max`` (pro's fields, no ``image_urls``; priced as BFL's max plus AI/ML's 5%).
  Needs ``Authorization: Bearer <api_key>`` (missing or wrong: 401). Every error answers the
  documented body ``{"message", "path", "requestId", "statusCode", "timestamp"}``, where
  ``path`` is the API path that was called (as the AI/ML docs define it, *not* a field) and
  ``statusCode`` an integer. Validation failures answer 400 with ``message`` listing every
  problem as ``"<field>: <reason>"`` joined by ``"; "`` (the docs give no wording; fields
  are dotted, e.g. ``image_size.width`` or ``loras[1].scale``). What is validated:

  - ``model`` one of ``MODELS``; ``prompt`` a non-blank string of at most 4000 characters;
  - ``image_size``: a preset (``square_hd``, ``square``, ``portrait_4_3``,
    ``portrait_16_9``, ``landscape_4_3``, ``landscape_16_9``) or ``{width, height}``, each an
    integer 512–2048 and a multiple of 32 (a missing side defaults to 1024 × 768);
  - ``seed`` an integer ≥ 1; ``output_format`` jpeg|png|webp; ``enable_safety_checker`` bool;
  - dev and LoRA models: ``guidance_scale`` 0–20, ``num_inference_steps`` integer 4–50,
    ``acceleration`` none|regular|high, ``enable_prompt_expansion`` bool, ``num_images``
    a whole number 1–4 (the schema types it ``number``: ``2.0`` passes, ``2.5`` does not);
  - LoRA models: ``loras`` at most 3 objects, each ``path`` a non-empty string and optional
    ``scale`` 0–4;
  - pro models: ``safety_tolerance`` a *string* ``"1"``–``"6"`` (the integer ``2`` is a 400);
  - ``-edit`` models: ``image_urls`` required, 1–3 strings, each an http(s) URL (accepted
    without fetching) or a base64 image, optionally as a ``data:`` URL, that must decode to
    a real image (else 400).

  Fields a model does not document (``image_urls`` on a text-to-image model, ``num_images``
  or ``guidance_scale`` on pro, ``loras`` outside LoRA models, unknown names) are *ignored*
  and listed in ``AIMLRequest.ignored_fields``: the docs' own pro-edit example sends
  ``guidance_scale``, which pro does not document, and gets a 200. With ``strict = True``
  they answer 400 instead (for tests that the client sends only documented fields).

  Checks run in this order: auth (401), JSON parsing and validation (computed, not yet
  answered), injected ``faults``, validation (400), concurrency (429), credits (403), then
  the generation (``latency``) and a 200.
  Success: ``{"data": [{"url": ..., "b64_json": null}, ...], "meta": {"usage": {...}}}``,
  one entry per ``num_images`` (always one on pro models).
* ``GET /files/<request_index>/<n>.<ext>?exp=...&sig=...`` on a *separate* port
  (``cdn_base_url``), standing in for the CDN that serves result URLs: no auth, 403 once
  ``url_ttl`` has passed or on a bad signature, 404 for unknown files.
* ``GET /v1/billing/balance`` (API port): the documented account balance ``{"balance",
  "lowBalance", "lowBalanceThreshold", "lastUpdated", "autoDebitStatus", "status",
  "statusExplanation"}``. ``balance`` is ``credits`` (AI/ML credits; ``UNLIMITED_BALANCE``
  when ``credits`` is ``None``), ``lowBalance`` is ``balance < low_balance_threshold``. Needs
  the same ``Authorization`` as generations (missing or wrong: 401, the documented body);
  ``balance_faults`` (a list of statuses) pops one per request and answers it instead.
  Every call is counted in ``balance_checks``.
* Anything else: a 404 error body (``"Cannot GET /x"``).

Knobs (plain attributes; change them at any time)
-------------------------------------------------
* ``latency``: seconds each valid request "generates" before the 200 (read per request).
* ``result_mode``: ``"url"`` (default: links to the CDN port) or ``"b64_json"`` (inline).
* ``usage_field``: ``"credits_used"`` (default, as the OpenAPI schema says), ``"tokens_used"``
  (as the docs' example responses show) or ``None`` (no ``meta`` at all).
* ``usd_spent``: when true (default false), ``meta.usage`` also carries ``usd_spent``, the
  cost in dollars, as newer answers do (bfl-tools.md).
* ``url_ttl``: seconds a result URL stays valid after the answer.
* ``credits``: remaining AI/ML credits ($1 = 2,000,000), or ``None`` for unlimited. A request
  costing more than what is left answers 403 (the documented "out of credits"); successful
  generations (and ``billed`` faults) are charged. See ``quote()`` for the price table.
* ``max_concurrent``: concurrency cap (``None``: no cap). With that many generations in
  progress, a request answers 429 at once.
* ``low_balance_threshold``: AI/ML credits under which ``/v1/billing/balance`` reports
  ``lowBalance: true`` (default 10,000,000 = $5).
* ``retry_after``: ``int | None``. When set, every 429 and 503 carries ``Retry-After: <n>``.
* ``strict``: refuse undocumented fields with 400 instead of ignoring them.
* ``image_side``: side in pixels of the (noise) images returned (default 32, whatever size
  was asked for, so tests stay fast).
* ``download_chunked``: serve result files without ``Content-Length`` (chunked), to test a
  client's streaming byte cap.
* ``download_faults``: a list of HTTP statuses; each result download pops the first one and
  answers it instead of the file.
* ``faults``: a list of ``Fault``; each request that passes the auth check pops the first one.
  ``Fault(status=200, delay=d)`` answers normally but ``d`` seconds later (the generation
  takes longer: use a ``d`` beyond the client's read timeout to test its timeout);
  ``Fault(status=200, body={...})`` answers that exact JSON with a 200. Any other status
  sleeps ``delay`` then answers ``status`` with ``body`` (``None``: the documented error body
  with a default message; ``str``: sent as text, HTML when it starts with ``<``; anything
  else: JSON). ``billed=True`` charges a valid request's price first, as a generation that
  ran and then failed (e.g. a 504) might.

Inspection
----------
``requests`` (every POST, including rejected ones, as ``AIMLRequest``: model, lower-cased
headers, the exact parsed JSON body, raw bytes, status, answer), ``downloads`` (every CDN
GET with its headers), ``image_bytes(request_index, n)`` (the exact bytes of the ``n``-th
image returned to request ``request_index``), ``active``, ``max_active_seen``,
``rejected_429``, ``credits_spent``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import io
import json
import re
import secrets
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final, Literal

from aiohttp import web
from PIL import Image

from tests.fakes.common import LoopbackServer, decode_image, is_int, is_number, serve_on_loopback

__all__ = [
    "API_PATH",
    "BALANCE_PATH",
    "IMAGE_SIZE_PRESETS",
    "MODELS",
    "UNITS_PER_USD",
    "AIMLRequest",
    "Download",
    "FakeAIML",
    "Fault",
    "ModelSpec",
]

API_PATH: Final = "/v1/images/generations"
BALANCE_PATH: Final = "/v1/billing/balance"
# What the balance route reports for unlimited ``credits``: $500.
UNLIMITED_BALANCE: Final = 1_000_000_000
DEFAULT_LOW_BALANCE_THRESHOLD: Final = 10_000_000
UNITS_PER_USD: Final = 2_000_000  # the AI/ML API's documented "$1 = 2,000,000 credits"
MEGAPIXEL: Final = 1_048_576
PROMPT_MAX: Final = 4000
MIN_SIDE: Final = 512
MAX_SIDE: Final = 2048
SIDE_MULTIPLE: Final = 32
MAX_IMAGE_URLS: Final = 3
MAX_LORAS: Final = 3
# fal.ai's pixel sizes for the named presets (the AI/ML API forwards FLUX.2 to fal.ai).
IMAGE_SIZE_PRESETS: Final[dict[str, tuple[int, int]]] = {
    "square_hd": (1024, 1024),
    "square": (512, 512),
    "portrait_4_3": (768, 1024),
    "portrait_16_9": (576, 1024),
    "landscape_4_3": (1024, 768),
    "landscape_16_9": (1024, 576),
}
DEFAULT_OBJECT_SIZE: Final = (1024, 768)  # the schema's width/height defaults
OUTPUT_FORMATS: Final = ("jpeg", "png", "webp")
CONTENT_TYPES: Final = {"jpeg": "image/jpeg", "png": "image/png", "webp": "image/webp"}
PIL_FORMATS: Final = {"jpeg": "JPEG", "png": "PNG", "webp": "WEBP"}
ACCELERATIONS: Final = ("none", "regular", "high")
SAFETY_TOLERANCES: Final = ("1", "2", "3", "4", "5", "6")

ResultMode = Literal["url", "b64_json"]
UsageField = Literal["credits_used", "tokens_used"]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_COMMON_FIELDS: Final = frozenset(
    {"model", "prompt", "image_size", "seed", "output_format", "enable_safety_checker"}
)
_DEV_FIELDS: Final = frozenset(
    {
        "guidance_scale",
        "num_inference_steps",
        "acceleration",
        "enable_prompt_expansion",
        "num_images",
    }
)


@dataclass(frozen=True)
class ModelSpec:
    """What one model accepts, and its price (USD, roughly fal.ai's plus AI/ML's margin)."""

    name: str
    edit: bool  # image_urls required (1–3)
    family: Literal["dev", "lora", "pro"]
    first_mp_usd: float  # per output image, for its first megapixel
    extra_mp_usd: float  # per extra output megapixel and per input megapixel

    @property
    def known_fields(self) -> frozenset[str]:
        fields = set(_COMMON_FIELDS)
        if self.family in ("dev", "lora"):
            fields |= _DEV_FIELDS
        if self.family == "lora":
            fields.add("loras")
        if self.family == "pro":
            fields.add("safety_tolerance")
        if self.edit:
            fields.add("image_urls")
        return frozenset(fields)


# Calibrated on the docs' examples: a 1472×512 flux-2-pro image is 63,000 credits ($0.0315).
MODELS: Final[dict[str, ModelSpec]] = {
    spec.name: spec
    for spec in (
        ModelSpec("blackforestlabs/flux-2", False, "dev", 0.0126, 0.0126),
        ModelSpec("blackforestlabs/flux-2-edit", True, "dev", 0.0126, 0.0126),
        ModelSpec("blackforestlabs/flux-2-lora", False, "lora", 0.02205, 0.02205),
        ModelSpec("blackforestlabs/flux-2-lora-edit", True, "lora", 0.02205, 0.02205),
        ModelSpec("blackforestlabs/flux-2-pro", False, "pro", 0.0315, 0.01575),
        ModelSpec("blackforestlabs/flux-2-pro-edit", True, "pro", 0.0315, 0.01575),
        ModelSpec("blackforestlabs/flux-2-max", False, "pro", 0.0735, 0.0315),
    )
}


@dataclass
class Fault:
    """An error (or delay, or odd answer) injected into the next request; see the docstring."""

    status: int = 500
    delay: float = 0.0
    body: Any = None
    billed: bool = False


@dataclass
class AIMLRequest:
    """One POST to the API, as received and as answered."""

    index: int
    path: str
    headers: dict[str, str]  # names lower-cased
    raw: bytes
    body: Any  # the parsed JSON exactly as received (None when unparseable)
    model: str | None = None
    status: int = 0  # what we answered (0 while still generating)
    response: Any = None  # the JSON we answered, when JSON
    errors: list[tuple[str, str]] = field(default_factory=list)  # (field, reason)
    ignored_fields: tuple[str, ...] = ()
    image_count: int = 0
    credits_charged: int = 0
    received_at: float = 0.0  # time.monotonic()
    answered_at: float | None = None


@dataclass
class Download:
    """One GET of a result file on the CDN port."""

    path: str
    headers: dict[str, str]  # names lower-cased
    status: int


@dataclass
class _File:
    request_index: int
    n: int
    output_format: str
    sig: str
    expires_at: float  # time.monotonic()


_DEFAULT_MESSAGES: Final[dict[int, str]] = {
    400: "Bad request",
    401: "Unauthorized: invalid or missing API key",
    403: "Insufficient credits: please top up your balance",
    404: "Not found",
    429: "Too many requests",
    500: "Internal server error",
    503: "Service unavailable",
    504: "Generation timed out",
}
_HTML_PAGES: Final[dict[int, str]] = {
    502: "<html><head><title>502 Bad Gateway</title></head>"
    "<body><center><h1>502 Bad Gateway</h1></center></body></html>",
}


class FakeAIML(LoopbackServer):
    """An in-process stand-in for the AI/ML API's FLUX.2 models. See the module docstring."""

    def __init__(
        self,
        api_key: str = "test-aiml-key",
        *,
        latency: float = 0.02,
        result_mode: ResultMode = "url",
        usage_field: UsageField | None = "credits_used",
        url_ttl: float = 600.0,
        credits: float | None = None,
        max_concurrent: int | None = None,
        retry_after: int | None = None,
        strict: bool = False,
        image_side: int = 32,
    ) -> None:
        self.api_key = api_key
        self.latency = latency
        self.result_mode: ResultMode = result_mode
        self.usage_field: UsageField | None = usage_field
        self.url_ttl = url_ttl
        self.credits = credits
        self.max_concurrent = max_concurrent
        self.retry_after = retry_after
        self.strict = strict
        self.image_side = image_side
        self.download_chunked = False
        self.usd_spent = False
        # Images added to every answer beyond what was asked (a misbehaving provider).
        self.extra_images = 0
        self.download_faults: list[int] = []
        self.faults: list[Fault] = []
        self.low_balance_threshold = DEFAULT_LOW_BALANCE_THRESHOLD
        self.balance_faults: list[int] = []
        self.balance_checks = 0

        self.requests: list[AIMLRequest] = []
        self.downloads: list[Download] = []
        self.active = 0
        self.max_active_seen = 0
        self.rejected_429 = 0
        self.credits_spent = 0

        self._images: dict[tuple[int, int], bytes] = {}
        self._files: dict[str, _File] = {}  # by "<index>/<n>.<ext>"
        self._closing = asyncio.Event()
        self._api_runner: web.AppRunner | None = None
        self._cdn_runner: web.AppRunner | None = None
        self._base_url: str | None = None
        self._cdn_base_url: str | None = None

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Bind two ephemeral ports on 127.0.0.1 (API and CDN) and start serving."""
        if self._api_runner is not None:
            raise RuntimeError("FakeAIML already started")
        self._closing = asyncio.Event()
        api = web.Application(middlewares=[self._error_bodies])
        api.router.add_post(API_PATH, self._handle_generate)
        api.router.add_get(BALANCE_PATH, self._handle_balance)
        cdn = web.Application(middlewares=[self._error_bodies])
        cdn.router.add_get("/files/{index}/{filename}", self._handle_file)
        self._api_runner, self._base_url = await serve_on_loopback(api)
        self._cdn_runner, self._cdn_base_url = await serve_on_loopback(cdn)

    async def close(self) -> None:
        """Wake sleeping generations, stop serving, release the ports. Idempotent."""
        self._closing.set()
        for runner in (self._api_runner, self._cdn_runner):
            if runner is not None:
                await runner.cleanup()
        self._api_runner = self._cdn_runner = None

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT`` of the API (use as the AI/ML API base)."""
        if self._base_url is None:
            raise RuntimeError("FakeAIML not started")
        return self._base_url

    @property
    def cdn_base_url(self) -> str:
        """``http://127.0.0.1:PORT2``: where result URLs point (a different host:port)."""
        if self._cdn_base_url is None:
            raise RuntimeError("FakeAIML not started")
        return self._cdn_base_url

    # ------------------------------------------------------------------ inspection

    def image_bytes(self, request_index: int, n: int = 0) -> bytes:
        """The exact bytes of the ``n``-th image returned to request ``request_index``
        (deterministic noise seeded by both and the request's seed; cached)."""
        cached = self._images.get((request_index, n))
        if cached is not None:
            return cached
        request = self.requests[request_index]
        body = request.body if isinstance(request.body, dict) else {}
        seed = body.get("seed") if is_int(body.get("seed")) else 0
        fmt = str(body.get("output_format", "png"))
        fmt = fmt if fmt in OUTPUT_FORMATS else "png"
        side = self.image_side
        noise = hashlib.shake_256(f"{request_index}:{n}:{seed}".encode()).digest(side * side * 3)
        img = Image.frombytes("RGB", (side, side), noise)
        buf = io.BytesIO()
        if fmt == "png":
            img.save(buf, "PNG")
        else:
            img.save(buf, PIL_FORMATS[fmt], quality=90)
        data = buf.getvalue()
        self._images[(request_index, n)] = data
        return data

    @staticmethod
    def quote(spec: ModelSpec, body: Mapping[str, Any], input_mp: float) -> int:
        """AI/ML credits for a validated body: per image the first output MP plus extra MP,
        plus every input MP (URL inputs count as 1 MP: they are not fetched)."""
        size = body.get("image_size", "landscape_4_3")
        if isinstance(size, str):
            width, height = IMAGE_SIZE_PRESETS[size]
        else:
            width = size.get("width", DEFAULT_OBJECT_SIZE[0])
            height = size.get("height", DEFAULT_OBJECT_SIZE[1])
        output_mp = width * height / MEGAPIXEL
        per_image = spec.first_mp_usd + max(0.0, output_mp - 1.0) * spec.extra_mp_usd
        usd = _image_count(spec, body) * per_image + input_mp * spec.extra_mp_usd
        return round(usd * UNITS_PER_USD)

    # ------------------------------------------------------------------ validation

    def _validate(
        self, body: dict[str, Any]
    ) -> tuple[ModelSpec | None, list[tuple[str, str]], tuple[str, ...], float]:
        """(model, problems, ignored fields, input megapixels) of a parsed JSON object."""
        problems: list[tuple[str, str]] = []
        model = body.get("model")
        if model is None:
            return None, [("model", "is required")], (), 0.0
        spec = MODELS.get(model) if isinstance(model, str) else None
        if spec is None:
            return None, [("model", f"must be one of: {', '.join(MODELS)}")], (), 0.0

        ignored = tuple(name for name in body if name not in spec.known_fields)
        if self.strict:
            problems += [(name, f"is not allowed for {spec.name}") for name in ignored]

        prompt = body.get("prompt")
        if "prompt" not in body:
            problems.append(("prompt", "is required"))
        elif not isinstance(prompt, str):
            problems.append(("prompt", "must be a string"))
        elif not prompt.strip():
            problems.append(("prompt", "should not be empty"))
        elif len(prompt) > PROMPT_MAX:
            problems.append(("prompt", f"must be at most {PROMPT_MAX} characters"))

        if "image_size" in body:
            problems += _check_image_size(body["image_size"])
        if "seed" in body:
            seed = body["seed"]
            if not is_int(seed):
                problems.append(("seed", "must be an integer"))
            elif seed < 1:
                problems.append(("seed", "must be greater than or equal to 1"))
        _check_enum(problems, body, "output_format", OUTPUT_FORMATS)
        _check_bool(problems, body, "enable_safety_checker")

        if spec.family in ("dev", "lora"):
            _check_number(problems, body, "guidance_scale", 0, 20)
            _check_number(problems, body, "num_inference_steps", 4, 50, integer=True)
            _check_enum(problems, body, "acceleration", ACCELERATIONS)
            _check_bool(problems, body, "enable_prompt_expansion")
            _check_number(problems, body, "num_images", 1, 4, whole=True)
        if spec.family == "lora" and "loras" in body:
            problems += _check_loras(body["loras"])
        if spec.family == "pro" and "safety_tolerance" in body:
            value = body["safety_tolerance"]
            if not isinstance(value, str):
                problems.append(("safety_tolerance", 'must be a string, one of "1" to "6"'))
            elif value not in SAFETY_TOLERANCES:
                problems.append(("safety_tolerance", 'must be one of "1" to "6"'))

        input_mp = 0.0
        if spec.edit:
            url_problems, input_mp = _check_image_urls(body.get("image_urls"))
            problems += url_problems
        return spec, problems, ignored, input_mp

    # ------------------------------------------------------------------ responses

    def _error(self, status: int, message: Any = None, *, path: str = API_PATH) -> web.Response:
        """The documented error body."""
        payload = {
            "message": _DEFAULT_MESSAGES.get(status, f"HTTP {status}")
            if message is None
            else message,
            "path": path,
            "requestId": str(uuid.uuid4()),
            "statusCode": status,
            "timestamp": datetime.now(UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
        }
        headers: dict[str, str] = {}
        if status in (429, 503) and self.retry_after is not None:
            headers["Retry-After"] = str(self.retry_after)
        return web.json_response(payload, status=status, headers=headers)

    def _fault_response(self, fault: Fault) -> web.Response:
        body = fault.body
        if body is None:
            if fault.status in _HTML_PAGES:
                return web.Response(
                    status=fault.status, text=_HTML_PAGES[fault.status], content_type="text/html"
                )
            return self._error(fault.status)
        if isinstance(body, str):
            content_type = "text/html" if body.lstrip().startswith("<") else "text/plain"
            return web.Response(status=fault.status, text=body, content_type=content_type)
        headers: dict[str, str] = {}
        if fault.status in (429, 503) and self.retry_after is not None:
            headers["Retry-After"] = str(self.retry_after)
        return web.json_response(body, status=fault.status, headers=headers)

    def _success_payload(self, request: AIMLRequest, spec: ModelSpec, cost: int) -> dict[str, Any]:
        assert isinstance(request.body, dict)
        fmt = request.body.get("output_format", "png")
        items: list[dict[str, Any]] = []
        for n in range(_image_count(spec, request.body) + self.extra_images):
            data = self.image_bytes(request.index, n)
            if self.result_mode == "b64_json":
                items.append({"url": None, "b64_json": base64.b64encode(data).decode("ascii")})
                continue
            name = f"{request.index}/{n}.{fmt}"
            expires_at = time.monotonic() + self.url_ttl
            exp = int(time.time() + self.url_ttl)
            sig = secrets.token_urlsafe(16)
            self._files[name] = _File(request.index, n, fmt, sig, expires_at)
            items.append(
                {"url": f"{self.cdn_base_url}/files/{name}?exp={exp}&sig={sig}", "b64_json": None}
            )
        payload: dict[str, Any] = {"data": items}
        if self.usage_field is not None:
            payload["meta"] = {"usage": {self.usage_field: cost}}
            if self.usd_spent:
                payload["meta"]["usage"]["usd_spent"] = cost / UNITS_PER_USD
        return payload

    # ------------------------------------------------------------------ handlers

    async def _handle_generate(self, request: web.Request) -> web.Response:
        raw = await request.read()
        record = AIMLRequest(
            index=len(self.requests),
            path=request.path,
            headers={k.lower(): v for k, v in request.headers.items()},
            raw=raw,
            body=None,
            received_at=time.monotonic(),
        )
        self.requests.append(record)

        def answer(response: web.Response) -> web.Response:
            record.status = response.status
            record.answered_at = time.monotonic()
            if response.content_type == "application/json" and response.text is not None:
                record.response = json.loads(response.text)
            return response

        if not self._authorized(request):
            return answer(self._error(401))

        spec: ModelSpec | None = None
        input_mp = 0.0
        try:
            record.body = json.loads(raw) if raw else None
        except ValueError:  # JSONDecodeError or UnicodeDecodeError
            record.errors = [("body", "must be valid JSON")]
        if not record.errors:
            if not isinstance(record.body, dict):
                record.errors = [("body", "must be a JSON object")]
            else:
                model = record.body.get("model")
                record.model = model if isinstance(model, str) else None
                spec, record.errors, record.ignored_fields, input_mp = self._validate(record.body)

        extra_delay = 0.0
        if self.faults:
            fault = self.faults.pop(0)
            if fault.status != 200 or fault.body is not None:
                if fault.billed and spec is not None and not record.errors:
                    assert isinstance(record.body, dict)
                    record.credits_charged = self._charge(self.quote(spec, record.body, input_mp))
                if fault.status == 429:
                    self.rejected_429 += 1
                await self._sleep(fault.delay)
                return answer(self._fault_response(fault))
            extra_delay = fault.delay

        if record.errors:
            message = "; ".join(f"{name}: {reason}" for name, reason in record.errors)
            return answer(self._error(400, message))
        assert spec is not None and isinstance(record.body, dict)
        if self.max_concurrent is not None and self.active >= self.max_concurrent:
            self.rejected_429 += 1
            return answer(self._error(429, "Too many concurrent requests"))
        cost = self.quote(spec, record.body, input_mp)
        if self.credits is not None and cost > self.credits:
            return answer(self._error(403))

        self.active += 1
        self.max_active_seen = max(self.max_active_seen, self.active)
        try:
            # The generation runs to its end even if the client gives up meanwhile (aiohttp
            # does not cancel handlers on disconnect): it is billed, as on the real API.
            await self._sleep(self.latency + extra_delay)
        finally:
            self.active -= 1
        record.credits_charged = self._charge(cost)
        record.image_count = _image_count(spec, record.body)
        return answer(web.json_response(self._success_payload(record, spec, cost)))

    async def _handle_file(self, request: web.Request) -> web.StreamResponse:
        name = f"{request.match_info['index']}/{request.match_info['filename']}"
        headers = {k.lower(): v for k, v in request.headers.items()}

        def record(response: web.StreamResponse) -> web.StreamResponse:
            self.downloads.append(Download(request.path_qs, headers, response.status))
            return response

        if self.download_faults:
            return record(self._error(self.download_faults.pop(0), path=request.path))
        file = self._files.get(name)
        if file is None:
            return record(self._error(404, "File not found", path=request.path))
        if not hmac.compare_digest(request.query.get("sig", "").encode(), file.sig.encode()):
            return record(web.Response(status=403, text="Signature does not match"))
        if time.monotonic() > file.expires_at:
            return record(web.Response(status=403, text="Request has expired"))
        data = self.image_bytes(file.request_index, file.n)
        content_type = CONTENT_TYPES[file.output_format]
        if not self.download_chunked:
            return record(web.Response(body=data, content_type=content_type))
        response = web.StreamResponse(headers={"Content-Type": content_type})
        response.enable_chunked_encoding()
        await response.prepare(request)
        for start in range(0, len(data), 1024):
            await response.write(data[start : start + 1024])
        await response.write_eof()
        return record(response)

    async def _handle_balance(self, request: web.Request) -> web.Response:
        self.balance_checks += 1
        if not self._authorized(request):
            return self._error(401, path=BALANCE_PATH)
        if self.balance_faults:
            return self._error(self.balance_faults.pop(0), path=BALANCE_PATH)
        balance = UNLIMITED_BALANCE if self.credits is None else self.credits
        return web.json_response(
            {
                "balance": balance,
                "lowBalance": balance < self.low_balance_threshold,
                "lowBalanceThreshold": self.low_balance_threshold,
                "lastUpdated": datetime.now(UTC).isoformat(timespec="seconds"),
                "autoDebitStatus": "disabled",
                "status": "current",
                "statusExplanation": "",
            }
        )

    # ------------------------------------------------------------------ internals

    def _authorized(self, request: web.Request) -> bool:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(
            token.strip().encode(), self.api_key.encode()
        )

    def _charge(self, cost: int) -> int:
        self.credits_spent += cost
        if self.credits is not None:
            self.credits -= cost
        return cost

    async def _sleep(self, seconds: float) -> None:
        """Sleep, but wake up early when the fake is closing."""
        if seconds > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), timeout=seconds)

    @web.middleware
    async def _error_bodies(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """The documented error body for routing errors too."""
        try:
            return await handler(request)
        except web.HTTPException as exc:
            message = f"Cannot {request.method} {request.path}"
            return self._error(exc.status, message, path=request.path)


# ---------------------------------------------------------------------- field checks


def _image_count(spec: ModelSpec, body: Mapping[str, Any]) -> int:
    """Pro models do not document num_images: they make one image whatever is sent."""
    if spec.family == "pro":
        return 1
    count = body.get("num_images", 1)
    return int(count) if is_number(count) else 1


def _check_bool(problems: list[tuple[str, str]], body: Mapping[str, Any], name: str) -> None:
    if name in body and not isinstance(body[name], bool):
        problems.append((name, "must be a boolean"))


def _check_enum(
    problems: list[tuple[str, str]], body: Mapping[str, Any], name: str, allowed: tuple[str, ...]
) -> None:
    if name in body and body[name] not in allowed:
        problems.append((name, f"must be one of: {', '.join(allowed)}"))


def _check_number(
    problems: list[tuple[str, str]],
    body: Mapping[str, Any],
    name: str,
    lo: float,
    hi: float,
    *,
    integer: bool = False,
    whole: bool = False,
) -> None:
    """``integer``: the JSON value must be an integer; ``whole``: any number equal to one."""
    if name not in body:
        return
    value = body[name]
    if integer and not is_int(value):
        problems.append((name, "must be an integer"))
    elif not is_number(value):
        problems.append((name, "must be a number"))
    elif whole and value != int(value):
        problems.append((name, "must be a whole number"))
    elif not lo <= value <= hi:
        problems.append((name, f"must be between {lo:g} and {hi:g}"))


def _check_image_size(value: Any) -> list[tuple[str, str]]:
    if isinstance(value, str):
        if value not in IMAGE_SIZE_PRESETS:
            return [("image_size", f"must be one of: {', '.join(IMAGE_SIZE_PRESETS)}")]
        return []
    if not isinstance(value, dict):
        return [("image_size", "must be a preset name or an object with width and height")]
    problems: list[tuple[str, str]] = []
    for side in ("width", "height"):
        if side not in value:
            continue
        number = value[side]
        where = f"image_size.{side}"
        if not is_int(number):
            problems.append((where, "must be an integer"))
        elif not MIN_SIDE <= number <= MAX_SIDE:
            problems.append((where, f"must be between {MIN_SIDE} and {MAX_SIDE}"))
        elif number % SIDE_MULTIPLE:
            problems.append((where, f"must be a multiple of {SIDE_MULTIPLE}"))
    return problems


_HF_REPO: Final = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


def _check_loras(value: Any) -> list[tuple[str, str]]:
    if not isinstance(value, list):
        return [("loras", "must be an array")]
    if len(value) > MAX_LORAS:
        return [("loras", f"must contain at most {MAX_LORAS} items")]
    problems: list[tuple[str, str]] = []
    for index, item in enumerate(value):
        where = f"loras[{index}]"
        if not isinstance(item, dict):
            problems.append((where, "must be an object with a path"))
            continue
        path = item.get("path")
        if "path" not in item:
            problems.append((f"{where}.path", "is required"))
        elif not isinstance(path, str) or not path.strip():
            problems.append((f"{where}.path", "must be a non-empty string"))
        if "scale" in item:
            scale = item["scale"]
            if not is_number(scale):
                problems.append((f"{where}.scale", "must be a number"))
            elif not 0 <= scale <= 4:
                problems.append((f"{where}.scale", "must be between 0 and 4"))
    return problems


def _check_image_urls(value: Any) -> tuple[list[tuple[str, str]], float]:
    """Problems with an edit model's ``image_urls``, and the input megapixels."""
    if value is None:
        return [("image_urls", "is required")], 0.0
    if not isinstance(value, list):
        return [("image_urls", "must be an array")], 0.0
    if not 1 <= len(value) <= MAX_IMAGE_URLS:
        return [("image_urls", f"must contain 1 to {MAX_IMAGE_URLS} items")], 0.0
    problems: list[tuple[str, str]] = []
    input_mp = 0.0
    for index, item in enumerate(value):
        where = f"image_urls[{index}]"
        if not isinstance(item, str):
            problems.append((where, "must be a string"))
        elif item.startswith(("http://", "https://")):
            input_mp += 1.0  # not fetched; billed as one megapixel
        elif (size := decode_image(item)) is None:
            problems.append((where, "must be a URL or a base64-encoded image"))
        else:
            input_mp += size[0] * size[1] / MEGAPIXEL
    return problems, input_mp
