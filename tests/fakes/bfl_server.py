"""A test stand-in for Black Forest Labs' FLUX.2 HTTP API.

``FakeBFL`` is a real aiohttp server bound to ``127.0.0.1`` on an ephemeral port. It runs in
the caller's event loop, so pytest fixtures and benchmark scripts can drive it alongside the
code under test::

    async with FakeBFL(api_key="test-bfl-key", latency=0.05) as fake:
        settings.bfl_api_base = fake.base_url
        ...

Several accounts, each with its own key and active-task cap::

    async with FakeBFL(api_keys={"key-a": 24, "key-b": 20}) as fake:
        ...
        fake.set_cap("key-b", 5)

It follows the documented contract (``/work/shared/reference/bfl-api.md`` and BFL's OpenAPI
for ``/v1/flux-2-pro``).

Endpoints
---------
* ``POST /v1/<model>`` for every name in ``ENDPOINTS`` (pro, max, flex, klein-4b, klein-9b,
  pro-preview, klein-9b-preview, and the six klein LoRA endpoints below) and
  ``POST /v1/flux-tools/outpainting-v1`` (its own schema: unknown fields, webhook ones
  included, are a 422 ``extra_forbidden``; input_image, width and height required; an
  input past the canvas without ``auto_crop`` is a 422; the image comes back at the
  canvas size, png by default). Needs ``x-key`` (missing: 403 ``Not authenticated``,
  wrong: 401 ``Invalid API key``; no answer ever echoes a key). Bodies are validated like
  FastAPI/pydantic would (422 ``{"detail": [{"loc", "msg", "type", "input"}, ...]}``, one
  entry per problem). Fields a model does not know (including ``input_image_5``..``_8`` on
  klein, ``steps`` on pro, ...) are ignored, as the real API does, and listed in
  ``Submission.ignored_fields``.
  Answers ``{"id", "polling_url", "cost", "input_mp", "output_mp"}``; with ``webhook_url``
  ``{"id", "status": "Pending", "webhook_url", "cost", "input_mp", "output_mp"}`` instead.
  Checks run in this order: auth (403/401), injected ``submit_faults``, validation (422),
  concurrency (429, counted against the submitting key's cap only), credits (402).
* ``POST /v1/flux-2-klein-{4b,9b,9b-kv,9b-kv-bf16,base-4b,base-9b}-finetuned`` (LoRAs,
  public beta): the base model's body plus ``finetune_id`` (string) and
  ``finetune_strength`` (number), both required here (422 ``missing`` otherwise); priced as
  the base model. LoRAs exist per account: ``register_lora(finetune_id, base, api_key=None)``
  (``base`` one of ``LORA_BASES``, e.g. ``"klein-base-9b"``), listed in ``loras[key]``. After
  validation, a finetune the submitting key's account doesn't have, or one uploaded for
  another base than the endpoint's, answers 422 with one ``value_error`` at
  ``["body", "finetune_id"]`` (the mismatch names the right endpoint); nothing is created
  or billed. (BFL documents only that such a call fails; a 4xx at submit is the most
  useful failure to model: the client refunds at once.)
* ``GET /v1/poll/<region>/<id>?token=...`` (the ``polling_url``; a wrong/missing token or
  region answers 403) and ``GET /v1/get_result?id=<id>`` (the fallback). Both need ``x-key``.
  Unknown ids answer 200 ``{"id", "status": "Task not found"}``, and so does a task polled
  with a key other than the one that submitted it (tasks belong to an account), on both
  routes and before the token check; ``wrong_key_polls`` counts those.
* ``GET /delivery/<id>/sample.<ext>?se=...&sig=...``: the image, no auth. 403 with an XML
  ``AccessDenied`` body once ``result_ttl`` has passed since Ready, or on a bad signature;
  404 (XML) for unknown ids or tasks that are not Ready.
* ``GET /v1/credits`` -> ``{"credits": remaining}`` (needs ``x-key``: missing 403, unknown
  or revoked 401 ``Invalid API key``, as on every route; every key reads the one shared
  ``credits``). ``credits_checks`` counts the calls.
* Anything else: FastAPI-like JSON 404/405 (``{"detail": "Not Found"}``).

Knobs (plain attributes; change them at any time)
-------------------------------------------------
* ``latency``: seconds from submit to the final status (default for every task;
  ``Outcome.latency`` overrides it per prompt). Read at submit time.
* ``latency_jitter``: a fraction (default 0: every task takes exactly ``latency``); each task
  without a scripted latency then takes ``latency × uniform(1 - j, 1 + j)``, drawn from a
  generator seeded with ``jitter_seed`` (so a run is repeatable).
* API keys: ``FakeBFL(api_key="k", max_active=24)`` (one key; the defaults are
  ``"test-bfl-key"`` and 24) or ``FakeBFL(api_keys={"key-a": 24, "key-b": 20})`` (several
  accounts, each with its own cap; not both forms). A task belongs to the key that submitted
  it. ``set_cap(key, n)`` changes a cap, ``add_key(key, cap)`` / ``remove_key(key)`` add or
  revoke a key (a revoked key answers 401; its tasks and counters stay). ``api_keys`` and
  ``caps`` (a copy) show them. ``api_key`` and ``max_active`` (readable, and ``max_active``
  assignable) only work with exactly one key, otherwise they raise ``RuntimeError``.
* Concurrency cap: a task is *active* from submit until its latency has elapsed. With as many
  tasks of a key active as its cap, that key's submits answer 429; other keys are unaffected.
* ``retry_after``: ``int | None``. When set, every 429 carries ``Retry-After: <n>``.
* ``result_ttl``: seconds a delivery URL stays valid after the task became Ready. Read at
  download time.
* ``credits``: remaining credits (a property; assignable). A submit costing more than what is
  left answers 402. Tasks whose final status is Request/Content Moderated or Error are
  refunded when they reach it. (Tasks created by a ``SubmitFault`` are billed unconditionally,
  so ``credits`` may go negative.)
* ``region``: the cluster name used in ``polling_url`` (default ``"eu2"``).
* ``hold()`` / ``release()``: while held, no task ends. Tasks running when ``hold()`` is
  called, and tasks created while held, stay running (active, counted against their key's
  cap, polls and webhooks waiting); on ``release()`` each runs the rest of its latency (a task
  created while held: its whole latency) from then on. So a test can freeze the provider's
  capacity, e.g. to act on the queue while no slot can free. ``held`` tells which.
* ``webhook_responses_include_polling_url``: also return ``polling_url`` to webhook submits.
* ``script(prompt, Outcome(...))`` / ``scripts`` / ``default_outcome``: how tasks end, keyed
  by the exact prompt (persistent until removed from ``scripts``; ``script_task(prompt,
  seed, ...)`` scripts one task of a prompt by its seed). While running, the task
  shows ``Outcome.running_statuses`` in order, each for an equal share of the latency, with
  ``progress`` going from 0 to 1. At the latency it shows ``final_status`` forever. A final
  status that is not one of Ready / Request Moderated / Content Moderated / Error (e.g.
  ``"Queued-Weird"``) is reported forever with ``progress: null``: the client must give up at
  its own deadline. Such a task stops being active at its latency, is charged, and still
  triggers its webhook (with that odd status).
* ``submit_faults``: a list of ``SubmitFault``; each submit that passes the auth check pops
  the first one. ``status=200`` means "answer normally, after ``delay``". For other statuses,
  ``create_task=True`` first creates (and bills) the task when the body is valid, as a real
  5xx or read timeout can, then sleeps ``delay`` seconds, then answers ``status`` with
  ``body`` (None: a default body; ``str``: sent as text, HTML if it starts with ``<``;
  anything else: JSON). Defaults: 503 ``{"detail": "Service overloaded"}``, 502 an HTML
  gateway page, 429 the concurrency message (+ ``Retry-After`` when ``retry_after`` is set).
* Hostile answers (what a compromised or buggy API could send; the client must not trust
  them): ``polling_url_override`` replaces the submit's ``polling_url`` and
  ``sample_url_override`` the Ready answer's ``result.sample`` (both are format strings:
  ``{base}``, ``{id}``, ``{region}``, ``{token}``, and ``{sample}`` / ``{sample_quoted}``
  for the genuine result link, plain or percent-encoded for a query); ``reported_cost``
  replaces ``cost`` in the submit and Ready answers with any JSON value (``-5``, ``1e300``,
  ``float("nan")`` sent as ``NaN``, ``"nan"``, ``10**400``);
  ``result_size`` (``(width, height)`` or None) makes every result image that size, as a
  black 1-bit PNG whatever the ``output_format`` (``huge_png``: a 10000×10000 one is ~12 KB
  on the wire, built in ~0.1 s without holding its pixels, and would take hundreds of MB to
  decode); a malformed link such as ``"https://[zz]/x"`` works in either override;
  ``poll_padding`` adds that many bytes of filler to every poll answer; with
  ``endless_poll_body`` polls answer 200 with a chunked body that never ends (until the client
  hangs up). ``GET /redirect?to=<url>[&status=302]`` answers a redirect to ``to``.
* ``poll_faults``: a list of HTTP statuses; each poll (either poll route, after auth) pops the
  first one and answers it with a default body.
* ``webhook_mode``: ``"secret"`` (default: ``X-Webhook-Secret: <webhook_secret>``),
  ``"hmac"`` (``X-BFL-Signature: sha256=<hex HMAC-SHA256(secret, raw body)>`` instead),
  ``"both"``, ``"drop"`` (send nothing, record nothing), ``"duplicate"`` (send the same
  delivery twice) or ``"wrong_secret"`` (both headers, made with a wrong secret). Without a
  ``webhook_secret`` no authentication header is sent (except in ``"wrong_secret"`` mode).
* ``webhook_delay``: extra seconds after the final status before the webhook is sent.
* ``webhook_timeout``: client timeout for one webhook POST (default 5 s).

Inspection
----------
``submissions`` (every POST to a model endpoint, including rejected ones), ``tasks`` (by id),
``webhook_attempts``, ``poll_count`` (all poll requests) and ``Task.polls``,
``Task.first_final_poll_at`` (monotonic; when a poll first saw the final status) and
``Task.turnaround`` (from the task's creation to that poll),
``requests_seen`` (``(Host header, path)`` of every request, to prove what was fetched),
``active_count()``, ``max_active_seen``, ``rejected_429``, ``image_bytes(task_id)``.
Per key: ``active_count(key)``, ``max_active_seen_by_key[key]``, ``rejected_429_by_key[key]``,
``submits_by_key[key]`` (authenticated submit POSTs, whatever the answer), ``tasks_of(key)``,
``Task.owner_key`` and ``Submission.key_label``. The totals cover every key
(``max_active_seen`` is the peak of all keys' tasks together, not a sum of peaks).
``key_label(key)`` (``"key#<8 hex of sha256>"``) is what error messages and reprs show
instead of a key.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import io
import json
import math
import random
import secrets
import struct
import time
import uuid
import zlib
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from datetime import UTC, datetime
from typing import Any, Final, Literal
from urllib.parse import quote, urlsplit

import aiohttp
from aiohttp import web
from PIL import Image

from tests.fakes.common import LoopbackServer, decode_image, is_int, is_number, serve_on_loopback

__all__ = [
    "ENDPOINTS",
    "FINAL_STATUSES",
    "LORA_BASES",
    "EndpointSpec",
    "FakeBFL",
    "Outcome",
    "Submission",
    "SubmitFault",
    "Task",
    "WebhookAttempt",
    "WebhookMode",
    "huge_png",
    "key_label",
]

MEGAPIXEL: Final = 1_048_576
MAX_PIXELS: Final = 4 * MEGAPIXEL
READY: Final = "Ready"
REFUNDED_STATUSES: Final = frozenset({"Request Moderated", "Content Moderated", "Error"})
FINAL_STATUSES: Final = frozenset({READY}) | REFUNDED_STATUSES
CONCURRENCY_DETAIL: Final = (
    "You have exceeded the number of active tasks. Please wait for some of your tasks to "
    "finish before submitting new ones."
)
CONTENT_TYPES: Final = {"jpeg": "image/jpeg", "png": "image/png", "webp": "image/webp"}
PIL_FORMATS: Final = {"jpeg": "JPEG", "png": "PNG", "webp": "WEBP"}

_GENUINE: Final = object()  # `reported_cost` unset: answers carry the real quote
DEFAULT_API_KEY: Final = "test-bfl-key"
DEFAULT_MAX_ACTIVE: Final = 24

WebhookMode = Literal["secret", "hmac", "both", "drop", "duplicate", "wrong_secret"]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class EndpointSpec:
    """What one model endpoint accepts and costs."""

    name: str
    first_mp: float  # credits for the first output megapixel
    rate: float  # credits per extra output megapixel and per input megapixel
    max_input_images: int
    flex_fields: bool = False  # steps, guidance, prompt_upsampling
    pup_field: bool = False  # disable_pup
    # The outpainting tool's own schema (``FluxOutpaintingInputs``): no seed, no webhook,
    # and ``additionalProperties: false`` (unknown fields are a 422, not ignored).
    outpainting: bool = False
    # A klein `-finetuned` endpoint: the base model its LoRAs must have been uploaded for.
    finetune_base: str | None = None

    @property
    def image_fields(self) -> tuple[str, ...]:
        extra = (f"input_image_{n}" for n in range(2, self.max_input_images + 1))
        return ("input_image", *extra)

    @property
    def known_fields(self) -> frozenset[str]:
        if self.outpainting:
            return OUTPAINTING_FIELDS
        fields = {
            "prompt",
            "seed",
            "width",
            "height",
            "safety_tolerance",
            "output_format",
            "webhook_url",
            "webhook_secret",
            "user",
            *self.image_fields,
        }
        if self.flex_fields:
            fields |= {"steps", "guidance", "prompt_upsampling"}
        if self.pup_field:
            fields.add("disable_pup")
        if self.finetune_base is not None:
            fields |= {"finetune_id", "finetune_strength"}
        return frozenset(fields)


OUTPAINTING: Final = "flux-tools/outpainting-v1"
OUTPAINTING_FIELDS: Final = frozenset(
    {
        "input_image",
        "width",
        "height",
        "reference_offset_x",
        "reference_offset_y",
        "auto_crop",
        "mode",
        "prompt",
        "disable_pup",
        "safety_tolerance",
        "output_format",
        "user",
    }
)
OUTPAINTING_MODES: Final = ("high", "fast")

ENDPOINTS: Final[dict[str, EndpointSpec]] = {
    spec.name: spec
    for spec in (
        EndpointSpec("flux-2-pro", 3.0, 1.5, 8, pup_field=True),
        EndpointSpec("flux-2-max", 7.0, 3.0, 8, pup_field=True),
        EndpointSpec("flux-2-flex", 5.0, 5.0, 8, flex_fields=True),
        EndpointSpec("flux-2-klein-4b", 1.4, 0.1, 4),
        EndpointSpec("flux-2-klein-9b", 1.5, 0.2, 4),
        EndpointSpec("flux-2-pro-preview", 3.0, 1.5, 8, pup_field=True),
        EndpointSpec("flux-2-klein-9b-preview", 1.5, 0.2, 4),
        # BFL publishes no price for outpainting: the stand-in's own, below the bot's
        # conservative estimate, so tests can tell the returned cost was charged.
        EndpointSpec(OUTPAINTING, 5.0, 2.0, 1, outpainting=True),
        # LoRAs on klein (public beta): billed at the base model's price.
        EndpointSpec("flux-2-klein-4b-finetuned", 1.4, 0.1, 4, finetune_base="klein-4b"),
        EndpointSpec("flux-2-klein-9b-finetuned", 1.5, 0.2, 4, finetune_base="klein-9b"),
        EndpointSpec("flux-2-klein-9b-kv-finetuned", 1.5, 0.2, 4, finetune_base="klein-9b-kv"),
        EndpointSpec(
            "flux-2-klein-9b-kv-bf16-finetuned", 1.5, 0.2, 4, finetune_base="klein-9b-kv-bf16"
        ),
        EndpointSpec("flux-2-klein-base-4b-finetuned", 1.4, 0.1, 4, finetune_base="klein-base-4b"),
        EndpointSpec("flux-2-klein-base-9b-finetuned", 1.5, 0.2, 4, finetune_base="klein-base-9b"),
    )
}
# The base models LoRAs can be uploaded for (each has one `-finetuned` endpoint).
LORA_BASES: Final = frozenset(
    spec.finetune_base for spec in ENDPOINTS.values() if spec.finetune_base is not None
)


@dataclass
class Outcome:
    """How a task behaves; see ``FakeBFL.script``."""

    final_status: str = READY
    running_statuses: tuple[str, ...] = ("Pending", "Generating")
    latency: float | None = None  # overrides FakeBFL.latency
    details: dict[str, Any] | None = None


@dataclass
class SubmitFault:
    """An error (or delay) injected into the next submit; see the module docstring."""

    status: int = 500
    create_task: bool = True
    delay: float = 0.0
    body: Any = None


@dataclass
class Submission:
    """One POST to a model endpoint, as received and as answered."""

    endpoint: str
    headers: dict[str, str]  # names lower-cased
    body: Any  # the parsed JSON exactly as received (None when unparseable)
    status: int = 0  # what we answered (set before any injected delay)
    task_id: str | None = None
    ignored_fields: tuple[str, ...] = ()
    response: Any = None  # the JSON we answered, when JSON
    received_at: float = 0.0  # time.monotonic()
    key_label: str | None = None  # ``key_label(x-key)`` when the key was valid, else None

    def __repr__(self) -> str:
        # ``headers`` keeps the real x-key for assertions; a printed Submission (e.g. in an
        # assertion failure) shows its label instead.
        shown = {
            name: key_label(value) if name == "x-key" else value
            for name, value in self.headers.items()
        }
        parts = [
            f"{f.name}={shown if f.name == 'headers' else getattr(self, f.name)!r}"
            for f in fields(self)
        ]
        return f"Submission({', '.join(parts)})"


@dataclass
class Task:
    """One generation task. ``status`` and friends are computed from timestamps."""

    id: str
    endpoint: str
    body: dict[str, Any]
    outcome: Outcome
    created_at: float  # time.monotonic()
    ready_at: float  # time.monotonic() when the final status is reached
    created_wall: float  # time.time() at submit
    seed: int
    cost: float  # what the submit quoted
    input_mp: float
    output_mp: float
    output_format: str
    token: str  # polling_url token
    region: str
    sig: str  # delivery URL signature
    webhook_url: str | None = None
    webhook_secret: str | None = None
    # The API key that submitted the task (its account); kept out of repr so that an
    # assertion failure printing a Task does not print a secret.
    owner_key: str = field(default=DEFAULT_API_KEY, repr=False)
    polls: int = 0
    # time.monotonic() when a poll first saw the final status (None: none has yet).
    first_final_poll_at: float | None = None
    charged: float = 0.0  # cost minus refunds
    # While the fake is held: the latency left when the hold ends (``ready_at`` is infinite).
    held_for: float | None = None
    settled: bool = False  # final status reached and refund applied

    @property
    def latency(self) -> float:
        return self.ready_at - self.created_at

    @property
    def turnaround(self) -> float | None:
        """Seconds from the task's creation to the first poll that saw it final."""
        if self.first_final_poll_at is None:
            return None
        return self.first_final_poll_at - self.created_at

    @property
    def owner_label(self) -> str:
        """``key_label`` of the key that submitted the task (printable)."""
        return key_label(self.owner_key)

    def is_active(self, now: float | None = None) -> bool:
        return (time.monotonic() if now is None else now) < self.ready_at

    def status_at(self, now: float) -> tuple[str, float | None]:
        """(status, progress) at monotonic time ``now``."""
        if now >= self.ready_at:
            known = self.outcome.final_status in FINAL_STATUSES
            return self.outcome.final_status, (1.0 if known else None)
        fraction = max(0.0, (now - self.created_at) / self.latency)
        running = self.outcome.running_statuses or ("Pending",)
        index = min(int(fraction * len(running)), len(running) - 1)
        return running[index], round(fraction, 3)

    @property
    def status(self) -> str:
        return self.status_at(time.monotonic())[0]

    @property
    def end_wall(self) -> float:
        return self.created_wall + self.latency


@dataclass
class WebhookAttempt:
    """One webhook POST the fake made."""

    url: str
    task_id: str
    status_code: int | None  # HTTP status received, None when the POST raised
    error: str | None  # exception text when the POST raised
    headers: dict[str, str]
    body: bytes
    sent_at: float  # time.monotonic()


PNG_SIGNATURE: Final = b"\x89PNG\r\n\x1a\n"


def huge_png(width: int, height: int) -> bytes:
    """A valid black PNG of `width`×`height` at 1 bit per pixel, compressed row by row so
    that its pixels are never held: tiny on the wire whatever its size (``result_size``)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    row = bytes(1 + (width + 7) // 8)  # filter byte 0, then the row's bits
    compressor = zlib.compressobj(9)
    pixels = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # 1-bit greyscale
    return PNG_SIGNATURE + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")


def _placed_inside(image: tuple[int, int], width: int, height: int, body: dict[str, Any]) -> bool:
    """Whether the input, at its offsets (null: centred), lies wholly on the canvas."""
    for side, canvas, name in ((image[0], width, "x"), (image[1], height, "y")):
        offset = body.get(f"reference_offset_{name}")
        start = (canvas - side) // 2 if offset is None else offset
        if not is_int(start) or start < 0 or start + side > canvas:
            return False
    return True


def key_label(api_key: str) -> str:
    """A printable stand-in for an API key: never the key itself, stable across runs."""
    return "key#" + hashlib.sha256(api_key.encode()).hexdigest()[:8]


class _Errors:
    """Collects pydantic-style validation errors."""

    def __init__(self) -> None:
        self.items: list[dict[str, Any]] = []

    def add(self, loc: str | None, type_: str, msg: str, value: Any = None) -> None:
        item: dict[str, Any] = {
            "loc": ["body"] if loc is None else ["body", loc],
            "msg": msg,
            "type": type_,
        }
        if value is not None:
            item["input"] = value
        self.items.append(item)


def _json_response(
    payload: Any, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    return web.json_response(payload, status=status, headers=headers)


def _xml_error(status: int, code: str, message: str) -> web.Response:
    body = (
        '<?xml version="1.0" encoding="utf-8"?>'
        f"<Error><Code>{code}</Code><Message>{message}</Message></Error>"
    )
    return web.Response(status=status, text=body, content_type="application/xml")


_DEFAULT_FAULT_BODIES: Final[dict[int, Any]] = {
    400: {"detail": "Bad request"},
    401: {"detail": "Invalid API key"},
    402: {"detail": "Insufficient credits"},
    403: {"detail": "Not authorized to access this resource"},
    404: {"detail": "Not Found"},
    422: {"detail": [{"loc": ["body"], "msg": "Injected validation error", "type": "value_error"}]},
    429: {"detail": CONCURRENCY_DETAIL},
    500: {"detail": "Internal Server Error"},
    502: "<html><head><title>502 Bad Gateway</title></head>"
    "<body><center><h1>502 Bad Gateway</h1></center></body></html>",
    503: {"detail": "Service overloaded"},
    504: "<html><head><title>504 Gateway Time-out</title></head>"
    "<body><center><h1>504 Gateway Time-out</h1></center></body></html>",
}


class FakeBFL(LoopbackServer):
    """An in-process stand-in for the BFL FLUX.2 API. See the module docstring."""

    def __init__(
        self,
        api_key: str | None = None,
        *,
        api_keys: Mapping[str, int] | None = None,
        latency: float = 0.05,
        latency_jitter: float = 0.0,
        jitter_seed: int = 0,
        max_active: int | None = None,
        result_ttl: float = 600.0,
        credits: float = 10_000.0,
        retry_after: int | None = None,
        region: str = "eu2",
    ) -> None:
        if api_keys is not None:
            if api_key is not None or max_active is not None:
                raise ValueError("pass either api_keys={key: cap} or api_key=/max_active=")
            if not api_keys:
                raise ValueError("api_keys must hold at least one key")
            caps = dict(api_keys)
        else:
            caps = {
                DEFAULT_API_KEY if api_key is None else api_key: (
                    DEFAULT_MAX_ACTIVE if max_active is None else max_active
                )
            }
        # Per key: its active-task cap (insertion order = the order given).
        self._caps: dict[str, int] = {}
        self.max_active_seen_by_key: dict[str, int] = {}
        self.rejected_429_by_key: dict[str, int] = {}
        self.submits_by_key: dict[str, int] = {}
        for key, cap in caps.items():
            self.add_key(key, cap)
        self.latency = latency
        self.latency_jitter = latency_jitter
        self._jitter = random.Random(jitter_seed)
        self.result_ttl = result_ttl
        self.retry_after = retry_after
        self.region = region
        self._credits = float(credits)
        self.credits_checks = 0

        self.default_outcome = Outcome()
        self.scripts: dict[str, Outcome] = {}
        # Per task: (prompt, seed) → outcome, before the prompt's own script (one image of
        # several with one prompt, told apart by their seeds).
        self.task_scripts: dict[tuple[str, int], Outcome] = {}
        self.submit_faults: list[SubmitFault] = []
        self.poll_faults: list[int] = []
        self.webhook_mode: WebhookMode = "secret"
        self.webhook_delay = 0.0
        self.webhook_timeout = 5.0
        self.webhook_responses_include_polling_url = False
        self.polling_url_override: str | None = None
        self.sample_url_override: str | None = None
        self.reported_cost: Any = _GENUINE
        self.poll_padding = 0
        self.result_size: tuple[int, int] | None = None
        self.endless_poll_body = False
        self.requests_seen: list[tuple[str, str]] = []
        # Per key (account): the LoRAs uploaded to it, finetune_id → base model.
        self.loras: dict[str, dict[str, str]] = {key: {} for key in caps}

        self.submissions: list[Submission] = []
        self._answered = asyncio.Event()  # set at every submit answered (see `wait_for`)
        self.tasks: dict[str, Task] = {}
        self.webhook_attempts: list[WebhookAttempt] = []
        self.poll_count = 0
        self.downloads: Counter[str] = Counter()  # task id → result images served
        self.wrong_key_polls = 0  # polls of an existing task with another account's key
        self.max_active_seen = 0
        self.rejected_429 = 0

        self._unsettled: list[Task] = []
        self._released = asyncio.Event()
        self._released.set()
        self._images: dict[str, bytes] = {}
        self._webhook_jobs: set[asyncio.Task[None]] = set()
        self._closing = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self._base_url: str | None = None

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Bind 127.0.0.1 on an ephemeral port and start serving."""
        if self._runner is not None:
            raise RuntimeError("FakeBFL already started")
        app = web.Application(middlewares=[self._json_errors])
        for name in ENDPOINTS:
            app.router.add_post(f"/v1/{name}", self._handle_submit)
        app.router.add_get("/v1/poll/{region}/{task_id}", self._handle_poll)
        app.router.add_get("/v1/get_result", self._handle_get_result)
        app.router.add_get("/v1/credits", self._handle_credits)
        app.router.add_get("/delivery/{task_id}/{filename}", self._handle_delivery)
        app.router.add_get("/redirect", self._handle_redirect)
        self._closing = asyncio.Event()
        self._runner, self._base_url = await serve_on_loopback(app)
        self._session = aiohttp.ClientSession()

    async def close(self) -> None:
        """Cancel pending webhooks, stop serving, release the port. Idempotent."""
        self._closing.set()  # wakes delayed submit faults
        jobs = list(self._webhook_jobs)
        for job in jobs:
            job.cancel()
        await asyncio.gather(*jobs, return_exceptions=True)
        self._webhook_jobs.clear()
        if self._session is not None:
            await self._session.close()
            self._session = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT`` (use as BFL_API_BASE)."""
        if self._base_url is None:
            raise RuntimeError("FakeBFL not started")
        return self._base_url

    # ------------------------------------------------------------------ knobs and inspection

    @property
    def credits(self) -> float:
        self._settle()
        return self._credits

    @credits.setter
    def credits(self, value: float) -> None:
        self._settle()
        self._credits = float(value)

    def script(self, prompt: str, outcome: Outcome) -> None:
        """Every later submit whose prompt equals ``prompt`` behaves as ``outcome``."""
        self.scripts[prompt] = outcome

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 5.0) -> None:  # noqa: ASYNC109
        """Wait until ``predicate()`` is true, re-checked each time a submit is answered."""

        async def wait() -> None:
            while not predicate():
                self._answered.clear()
                await self._answered.wait()

        await asyncio.wait_for(wait(), timeout)

    def script_task(self, prompt: str, seed: int, outcome: Outcome) -> None:
        """Every later submit with this prompt and seed behaves as ``outcome`` (it wins over
        the prompt's own script)."""
        self.task_scripts[(prompt, seed)] = outcome

    @property
    def held(self) -> bool:
        return not self._released.is_set()

    def hold(self) -> None:
        """From now until ``release()``, no task ends (see the module docstring)."""
        if self.held:
            return
        self._settle()
        self._released.clear()
        now = time.monotonic()
        for task in self._unsettled:
            task.held_for, task.ready_at = task.ready_at - now, math.inf

    def release(self) -> None:
        """Let the held tasks run the rest of their latency, from now."""
        if not self.held:
            return
        now = time.monotonic()
        for task in self._unsettled:
            if task.held_for is not None:
                task.ready_at, task.held_for = now + task.held_for, None
        self._released.set()

    # -- API keys (one per account, each with its own active-task cap)

    @property
    def api_keys(self) -> tuple[str, ...]:
        """The accepted keys, in the order given."""
        return tuple(self._caps)

    @property
    def caps(self) -> dict[str, int]:
        """A copy of {key: active-task cap}; change caps with ``set_cap``."""
        return dict(self._caps)

    @property
    def api_key(self) -> str:
        """The only key (single-key fakes; with several keys use ``api_keys``)."""
        return self._single_key("api_key")

    @property
    def max_active(self) -> int:
        """The only key's cap (single-key fakes; with several keys use ``caps``/``set_cap``)."""
        return self._caps[self._single_key("max_active")]

    @max_active.setter
    def max_active(self, cap: int) -> None:
        self.set_cap(self._single_key("max_active"), cap)

    def set_cap(self, api_key: str, cap: int) -> None:
        """Change one key's cap; takes effect at the next submit (running tasks go on)."""
        if api_key not in self._caps:
            raise KeyError(f"unknown API key {key_label(api_key)}")
        self._caps[api_key] = self._checked_cap(cap)

    def add_key(self, api_key: str, cap: int = DEFAULT_MAX_ACTIVE) -> None:
        """Accept one more key (a new account) from now on."""
        if not isinstance(api_key, str) or not api_key:
            raise ValueError("an API key must be a non-empty string")
        if api_key in self._caps:
            raise ValueError(f"API key {key_label(api_key)} already present")
        self._caps[api_key] = self._checked_cap(cap)
        # setdefault: a key revoked and added again keeps its history.
        self.max_active_seen_by_key.setdefault(api_key, 0)
        self.rejected_429_by_key.setdefault(api_key, 0)
        self.submits_by_key.setdefault(api_key, 0)

    def remove_key(self, api_key: str) -> None:
        """Revoke a key: from now on it answers 401. Its tasks and counters stay."""
        if api_key not in self._caps:
            raise KeyError(f"unknown API key {key_label(api_key)}")
        del self._caps[api_key]

    def register_lora(self, finetune_id: str, base: str, *, api_key: str | None = None) -> None:
        """A LoRA uploaded to an account (the only key by default) for a klein base model
        (``LORA_BASES``); a LoRA shared by another organisation is ``"org_id/name"``."""
        if base not in LORA_BASES:
            raise ValueError(f"unknown LoRA base {base!r}; one of {sorted(LORA_BASES)}")
        key = self._single_key("register_lora") if api_key is None else api_key
        self.loras.setdefault(key, {})[finetune_id] = base

    def active_count(self, api_key: str | None = None) -> int:
        """Active tasks of one key, or of all keys when ``api_key`` is None."""
        now = time.monotonic()
        return sum(
            1
            for task in self._unsettled
            if task.is_active(now) and (api_key is None or task.owner_key == api_key)
        )

    def tasks_of(self, api_key: str) -> list[Task]:
        """Every task that key submitted, oldest first."""
        return [task for task in self.tasks.values() if task.owner_key == api_key]

    def _single_key(self, what: str) -> str:
        if len(self._caps) != 1:
            raise RuntimeError(
                f"FakeBFL.{what} needs exactly one key; this fake has {len(self._caps)}: "
                "use api_keys / caps / set_cap(key, n)"
            )
        return next(iter(self._caps))

    @staticmethod
    def _checked_cap(cap: int) -> int:
        if not is_int(cap) or cap < 0:
            raise ValueError(f"a cap must be an integer >= 0, not {cap!r}")
        return cap

    def image_bytes(self, task_id: str) -> bytes:
        """The result image of a task (deterministic; computed once, then cached)."""
        cached = self._images.get(task_id)
        if cached is not None:
            return cached
        task = self.tasks[task_id]
        if self.result_size is not None:
            data = huge_png(*self.result_size)
            self._images[task_id] = data
            return data
        digest = hashlib.sha256(task_id.encode()).digest()
        # Outpainting answers at its canvas size; the image routes at a small fixed size.
        size = (
            (task.body["width"], task.body["height"]) if task.endpoint == OUTPAINTING else (32, 32)
        )
        img = Image.new("RGB", size, (digest[0], digest[1], digest[2]))
        # The seed's 8 bytes as grey pixels along the top row (lossy for jpeg/webp).
        for x, byte in enumerate((task.seed % 2**64).to_bytes(8, "big")):
            img.putpixel((x, 0), (byte, byte, byte))
        buf = io.BytesIO()
        if task.output_format == "png":
            img.save(buf, "PNG")
        else:
            img.save(buf, PIL_FORMATS[task.output_format], quality=90)
        data = buf.getvalue()
        self._images[task_id] = data
        return data

    # ------------------------------------------------------------------ internals

    def _settle(self) -> None:
        """Apply what happened since the last call: refunds, image rendering."""
        now = time.monotonic()
        still_running: list[Task] = []
        for task in self._unsettled:
            if now < task.ready_at:
                still_running.append(task)
                continue
            task.settled = True
            if task.outcome.final_status in REFUNDED_STATUSES:
                self._credits += task.charged
                task.charged = 0.0
            elif task.outcome.final_status == READY:
                self.image_bytes(task.id)
        self._unsettled = still_running

    def _authenticate(self, request: web.Request) -> str | web.Response:
        """The request's valid key, or the error to answer (never echoing the key)."""
        key = request.headers.get("x-key")
        if key is None:
            return _json_response({"detail": "Not authenticated"}, 403)
        matched: str | None = None
        for candidate in self._caps:  # compare with every key: no early exit
            if hmac.compare_digest(key.encode(), candidate.encode()):
                matched = candidate
        if matched is None:
            return _json_response({"detail": "Invalid API key"}, 401)
        return matched

    def _fault_response(self, status: int, body: Any = None) -> web.Response:
        if body is None:
            body = _DEFAULT_FAULT_BODIES.get(status, {"detail": f"HTTP {status}"})
        headers: dict[str, str] = {}
        if status == 429 and self.retry_after is not None:
            headers["Retry-After"] = str(self.retry_after)
        if isinstance(body, str):
            content_type = "text/html" if body.lstrip().startswith("<") else "text/plain"
            return web.Response(
                status=status, text=body, content_type=content_type, headers=headers
            )
        return _json_response(body, status, headers)

    def _too_many(self, api_key: str) -> web.Response:
        self._count_429(api_key)
        return self._fault_response(429)

    def _count_429(self, api_key: str) -> None:
        self.rejected_429 += 1
        self.rejected_429_by_key[api_key] += 1

    @web.middleware
    async def _json_errors(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """FastAPI-like JSON bodies for routing errors."""
        self.requests_seen.append((request.headers.get("Host", ""), request.path))
        try:
            return await handler(request)
        except web.HTTPNotFound:
            return _json_response({"detail": "Not Found"}, 404)
        except web.HTTPMethodNotAllowed:
            return _json_response({"detail": "Method Not Allowed"}, 405)

    def _validate(
        self, spec: EndpointSpec, body: dict[str, Any]
    ) -> tuple[list[dict[str, Any]], float]:
        """Pydantic-style errors, and the input megapixels of base64 images."""
        errors = _Errors()
        prompt = body.get("prompt")
        if "prompt" not in body:
            errors.add("prompt", "missing", "Field required")
        elif not isinstance(prompt, str):
            errors.add("prompt", "string_type", "Input should be a valid string", prompt)
        elif not prompt.strip():
            errors.add(
                "prompt", "string_too_short", "String should have at least 1 character", prompt
            )

        dims: dict[str, int] = {}
        for name in ("width", "height"):
            value = body.get(name)
            if value is None or (is_int(value) and value == 0):
                continue
            if not is_int(value):
                errors.add(name, "int_type", "Input should be a valid integer", value)
            elif value < 64:
                errors.add(
                    name, "greater_than_equal", "Input should be greater than or equal to 64", value
                )
            elif value % 16:
                errors.add(name, "multiple_of", "Input should be a multiple of 16", value)
            else:
                dims[name] = value
        if len(dims) == 2 and dims["width"] * dims["height"] > MAX_PIXELS:
            errors.add(
                None,
                "value_error",
                f"Value error, width * height must not exceed 4 megapixels ({MAX_PIXELS} px)",
            )

        seed = body.get("seed")
        if seed is not None and not is_int(seed):
            errors.add("seed", "int_type", "Input should be a valid integer", seed)
        if "safety_tolerance" in body:
            self._check_int(errors, body, "safety_tolerance", 0, 5, nullable=False)
        fmt = body.get("output_format")
        if fmt is not None and fmt not in CONTENT_TYPES:
            errors.add("output_format", "enum", "Input should be 'jpeg', 'png' or 'webp'", fmt)

        input_mp = 0.0
        for name in spec.image_fields:
            value = body.get(name)
            if value is None:
                continue
            if not isinstance(value, str):
                errors.add(name, "string_type", "Input should be a valid string", value)
            elif value.startswith(("http://", "https://")):
                continue  # URLs are accepted without fetching (and not billed here)
            elif (size := decode_image(value)) is None:
                errors.add(
                    name,
                    "value_error",
                    "Value error, input image must be an http(s) URL or a base64-encoded image",
                )
            else:
                input_mp += size[0] * size[1] / MEGAPIXEL

        if spec.flex_fields:
            self._check_int(errors, body, "steps", 1, 50)
            guidance = body.get("guidance")
            if guidance is not None:
                if not is_number(guidance):
                    errors.add("guidance", "float_type", "Input should be a valid number", guidance)
                elif guidance < 1.5:
                    errors.add(
                        "guidance",
                        "greater_than_equal",
                        "Input should be greater than or equal to 1.5",
                        guidance,
                    )
                elif guidance > 10:
                    errors.add(
                        "guidance",
                        "less_than_equal",
                        "Input should be less than or equal to 10",
                        guidance,
                    )
            self._check_bool(errors, body, "prompt_upsampling")
        if spec.pup_field:
            self._check_bool(errors, body, "disable_pup")
        if spec.finetune_base is not None:
            finetune_id = body.get("finetune_id")
            if "finetune_id" not in body:
                errors.add("finetune_id", "missing", "Field required")
            elif not isinstance(finetune_id, str):
                errors.add(
                    "finetune_id", "string_type", "Input should be a valid string", finetune_id
                )
            strength = body.get("finetune_strength")
            if "finetune_strength" not in body:
                errors.add("finetune_strength", "missing", "Field required")
            elif not is_number(strength):
                errors.add(
                    "finetune_strength", "float_type", "Input should be a valid number", strength
                )

        webhook_url = body.get("webhook_url")
        if webhook_url is not None:
            if not isinstance(webhook_url, str):
                errors.add(
                    "webhook_url", "string_type", "Input should be a valid string", webhook_url
                )
            elif len(webhook_url) > 2083:
                errors.add(
                    "webhook_url",
                    "string_too_long",
                    "String should have at most 2083 characters",
                    webhook_url,
                )
            else:
                parts = urlsplit(webhook_url)
                if parts.scheme not in ("http", "https") or not parts.netloc:
                    errors.add(
                        "webhook_url", "url_parsing", "Input should be a valid URL", webhook_url
                    )
        secret = body.get("webhook_secret")
        if secret is not None and not isinstance(secret, str):
            errors.add("webhook_secret", "string_type", "Input should be a valid string", secret)
        user = body.get("user")
        if user is not None:
            if not isinstance(user, str):
                errors.add("user", "string_type", "Input should be a valid string", user)
            elif not 1 <= len(user) <= 256:
                kind, msg = (
                    ("string_too_short", "String should have at least 1 character")
                    if not user
                    else ("string_too_long", "String should have at most 256 characters")
                )
                errors.add("user", kind, msg, user)
        return errors.items, input_mp

    def _validate_outpainting(self, body: dict[str, Any]) -> tuple[list[dict[str, Any]], float]:
        """``FluxOutpaintingInputs`` as pydantic would check it: every unknown field is an
        error (``extra_forbidden``: webhook fields too), input_image/width/height required."""
        errors = _Errors()
        for name in body:
            if name not in OUTPAINTING_FIELDS:
                errors.add(name, "extra_forbidden", "Extra inputs are not permitted", body[name])
        image_size: tuple[int, int] | None = None
        value = body.get("input_image")
        if "input_image" not in body:
            errors.add("input_image", "missing", "Field required")
        elif not isinstance(value, str):
            errors.add("input_image", "string_type", "Input should be a valid string", value)
        elif not value.startswith(("http://", "https://")):
            image_size = decode_image(value)
            if image_size is None:
                errors.add(
                    "input_image",
                    "value_error",
                    "Value error, input image must be an http(s) URL or a base64-encoded image",
                )
        canvas: dict[str, int] = {}
        for name in ("width", "height"):
            side = body.get(name)
            if name not in body:
                errors.add(name, "missing", "Field required")
            elif not is_int(side):
                errors.add(name, "int_type", "Input should be a valid integer", side)
            elif side < 64:
                errors.add(
                    name, "greater_than_equal", "Input should be greater than or equal to 64", side
                )
            else:
                canvas[name] = side
        for name in ("reference_offset_x", "reference_offset_y"):
            offset = body.get(name)
            if offset is not None and not is_int(offset):
                errors.add(name, "int_type", "Input should be a valid integer", offset)
        for name in ("auto_crop", "disable_pup"):
            self._check_bool(errors, body, name)
        mode = body.get("mode")
        if "mode" in body and mode not in OUTPAINTING_MODES:
            errors.add("mode", "enum", "Input should be 'high' or 'fast'", mode)
        prompt = body.get("prompt")
        if prompt is not None and not isinstance(prompt, str):
            errors.add("prompt", "string_type", "Input should be a valid string", prompt)
        if "safety_tolerance" in body:
            self._check_int(errors, body, "safety_tolerance", 0, 5, nullable=False)
        fmt = body.get("output_format")
        if fmt is not None and fmt not in CONTENT_TYPES:
            errors.add("output_format", "enum", "Input should be 'jpeg', 'png' or 'webp'", fmt)
        user = body.get("user")
        if user is not None and (not isinstance(user, str) or not 1 <= len(user) <= 256):
            errors.add("user", "string_type", "Input should be a string of 1-256 characters", user)
        crops = body.get("auto_crop") is True
        if (
            image_size is not None
            and len(canvas) == 2
            and not crops
            and not _placed_inside(image_size, canvas["width"], canvas["height"], body)
        ):
            errors.add(
                None,
                "value_error",
                "Value error, the input image extends past the canvas; enable auto_crop "
                "or choose a larger canvas",
            )
        input_mp = image_size[0] * image_size[1] / MEGAPIXEL if image_size else 0.0
        return errors.items, input_mp

    def _lora_error(
        self, spec: EndpointSpec, body: dict[str, Any], api_key: str
    ) -> dict[str, Any] | None:
        """A finetune the account doesn't have, or one uploaded for another base model: a 422
        at submit naming the field (nothing is created or billed), so the caller can tell
        the member at once instead of waiting for a failed task."""
        finetune_id = body["finetune_id"]
        base = self.loras.get(api_key, {}).get(finetune_id)
        if base is None:
            message = f"Value error, finetune '{finetune_id}' not found for this account"
        elif base != spec.finetune_base:
            message = (
                f"Value error, finetune '{finetune_id}' was trained for {base}; "
                f"use /v1/flux-2-{base}-finetuned"
            )
        else:
            return None
        return {
            "loc": ["body", "finetune_id"],
            "msg": message,
            "type": "value_error",
            "input": finetune_id,
        }

    @staticmethod
    def _check_int(
        errors: _Errors, body: dict[str, Any], name: str, lo: int, hi: int, *, nullable: bool = True
    ) -> None:
        value = body.get(name)
        if value is None and nullable:
            return
        if not is_int(value):
            errors.add(name, "int_type", "Input should be a valid integer", value)
        elif value < lo:
            errors.add(
                name, "greater_than_equal", f"Input should be greater than or equal to {lo}", value
            )
        elif value > hi:
            errors.add(
                name, "less_than_equal", f"Input should be less than or equal to {hi}", value
            )

    @staticmethod
    def _check_bool(errors: _Errors, body: dict[str, Any], name: str) -> None:
        value = body.get(name)
        if value is not None and not isinstance(value, bool):
            errors.add(name, "bool_type", "Input should be a valid boolean", value)

    @staticmethod
    def _quote(spec: EndpointSpec, body: dict[str, Any], input_mp: float) -> tuple[float, float]:
        """(output megapixels, cost in credits) of a validated body."""
        width, height = body.get("width") or 0, body.get("height") or 0
        output_mp = width * height / MEGAPIXEL if width and height else 1.0
        cost = spec.first_mp + (output_mp - 1) * spec.rate + input_mp * spec.rate
        return output_mp, max(spec.first_mp, round(cost, 2))

    def _create_task(
        self, spec: EndpointSpec, body: dict[str, Any], input_mp: float, owner_key: str
    ) -> Task:
        now = time.monotonic()
        prompt = body.get("prompt") or ""  # outpainting's prompt is optional
        scripted = self.task_scripts.get((prompt, body.get("seed")))  # type: ignore[arg-type]
        outcome = replace(scripted or self.scripts.get(prompt, self.default_outcome))  # a snapshot
        latency = self.latency if outcome.latency is None else outcome.latency
        if outcome.latency is None and self.latency_jitter:
            latency *= self._jitter.uniform(1 - self.latency_jitter, 1 + self.latency_jitter)
        output_mp, cost = self._quote(spec, body, input_mp)
        seed = body.get("seed")
        webhook_url = body.get("webhook_url")
        task = Task(
            id=str(uuid.uuid4()),
            endpoint=spec.name,
            body=body,
            outcome=outcome,
            created_at=now,
            ready_at=now + max(0.0, latency),
            created_wall=time.time(),
            seed=seed if seed is not None else secrets.randbelow(2**32),
            cost=cost,
            input_mp=round(input_mp, 2),
            output_mp=round(output_mp, 2),
            output_format=body.get("output_format") or ("png" if spec.outpainting else "jpeg"),
            token=secrets.token_urlsafe(16),
            region=self.region,
            sig=secrets.token_urlsafe(24),
            webhook_url=webhook_url,
            webhook_secret=body.get("webhook_secret"),
            owner_key=owner_key,
            charged=cost,
        )
        if self.held:
            task.held_for, task.ready_at = task.latency, math.inf
        self._credits -= cost
        self.tasks[task.id] = task
        self._unsettled.append(task)
        self.max_active_seen = max(self.max_active_seen, self.active_count())
        self.max_active_seen_by_key[owner_key] = max(
            self.max_active_seen_by_key[owner_key], self.active_count(owner_key)
        )
        if webhook_url is not None:
            job = asyncio.create_task(self._send_webhook(task))
            self._webhook_jobs.add(job)
            job.add_done_callback(self._webhook_jobs.discard)
        return task

    def _submit_payload(self, task: Task) -> dict[str, Any]:
        payload: dict[str, Any] = {"id": task.id}
        polling_url = f"{self.base_url}/v1/poll/{task.region}/{task.id}?token={task.token}"
        if task.webhook_url is None:
            payload["polling_url"] = polling_url
        else:
            payload["status"] = "Pending"
            payload["webhook_url"] = task.webhook_url
            if self.webhook_responses_include_polling_url:
                payload["polling_url"] = polling_url
        payload.update(cost=task.cost, input_mp=task.input_mp, output_mp=task.output_mp)
        if self.polling_url_override is not None and "polling_url" in payload:
            payload["polling_url"] = self.polling_url_override.format(
                base=self.base_url, id=task.id, region=task.region, token=task.token
            )
        if self.reported_cost is not _GENUINE:
            payload["cost"] = self.reported_cost
        return payload

    def _result_payload(self, task: Task) -> dict[str, Any]:
        now = time.monotonic()
        status, progress = task.status_at(now)
        payload: dict[str, Any] = {
            "id": task.id,
            "status": status,
            "result": None,
            "progress": progress,
            "details": None,
            "preview": None,
        }
        if status == READY:
            expiry = datetime.fromtimestamp(task.end_wall + self.result_ttl, UTC)
            se = expiry.strftime("%Y-%m-%dT%H:%M:%SZ")
            payload["result"] = {
                "sample": f"{self.base_url}/delivery/{task.id}/sample.{task.output_format}"
                f"?se={se}&sig={task.sig}",
                "seed": task.seed,
                "prompt": task.body.get("prompt"),
                "start_time": task.created_wall,
                "end_time": task.end_wall,
            }
            payload["details"] = task.outcome.details
            payload["cost"] = task.cost if self.reported_cost is _GENUINE else self.reported_cost
            if self.sample_url_override is not None:
                payload["result"]["sample"] = self.sample_url_override.format(
                    base=self.base_url,
                    id=task.id,
                    region=task.region,
                    token=task.token,
                    sample=payload["result"]["sample"],
                    sample_quoted=quote(payload["result"]["sample"], safe=""),
                )
        elif status in ("Request Moderated", "Content Moderated"):
            payload["details"] = task.outcome.details or {
                "moderation_reasons": ["Content policy violation"]
            }
        elif status == "Error":
            payload["details"] = task.outcome.details or {"error": "Internal generation error"}
        elif not task.is_active(now):  # an unknown final status
            payload["details"] = task.outcome.details
        return payload

    # ------------------------------------------------------------------ handlers

    async def _handle_submit(self, request: web.Request) -> web.Response:
        self._settle()
        spec = ENDPOINTS[request.path.removeprefix("/v1/")]
        raw = await request.read()
        body: Any = None
        parse_error: dict[str, Any] | None = None
        if not raw:
            parse_error = {"loc": ["body"], "msg": "Field required", "type": "missing"}
        else:
            try:
                body = json.loads(raw)
            except ValueError as exc:  # JSONDecodeError or UnicodeDecodeError
                pos = exc.pos if isinstance(exc, json.JSONDecodeError) else 0
                parse_error = {
                    "loc": ["body", pos],
                    "msg": "JSON decode error",
                    "type": "json_invalid",
                }
        submission = Submission(
            endpoint=spec.name,
            headers={k.lower(): v for k, v in request.headers.items()},
            body=body,
            received_at=time.monotonic(),
        )
        self.submissions.append(submission)

        def answer(response: web.Response, task: Task | None = None) -> web.Response:
            submission.status = response.status
            submission.task_id = task.id if task else None
            self._answered.set()
            if response.content_type == "application/json" and response.text is not None:
                submission.response = json.loads(response.text)
            return response

        api_key = self._authenticate(request)
        if isinstance(api_key, web.Response):
            return answer(api_key)
        submission.key_label = key_label(api_key)
        self.submits_by_key[api_key] += 1

        errors: list[dict[str, Any]] = []
        input_mp = 0.0
        if parse_error is not None:
            errors = [parse_error]
        elif not isinstance(body, dict):
            errors = [
                {
                    "loc": ["body"],
                    "msg": "Input should be a valid dictionary or object to extract fields from",
                    "type": "model_attributes_type",
                }
            ]
        else:
            submission.ignored_fields = tuple(k for k in body if k not in spec.known_fields)
            if spec.outpainting:
                submission.ignored_fields = ()  # refused instead, by _validate_outpainting
                errors, input_mp = self._validate_outpainting(body)
            else:
                errors, input_mp = self._validate(spec, body)

        if self.submit_faults:
            fault = self.submit_faults.pop(0)
            if fault.status != 200:
                task = None
                if fault.create_task and not errors:
                    task = self._create_task(spec, body, input_mp, api_key)
                if fault.status == 429:
                    self._count_429(api_key)
                response = answer(self._fault_response(fault.status, fault.body), task)
                await self._sleep(fault.delay)
                return response
            await self._sleep(fault.delay)
            self._settle()

        if errors:
            return answer(_json_response({"detail": errors}, 422))
        assert isinstance(body, dict)
        if spec.finetune_base is not None and (lora_error := self._lora_error(spec, body, api_key)):
            return answer(_json_response({"detail": [lora_error]}, 422))
        # A key revoked during an injected delay has no cap left: 0 keeps the answer a 429.
        if self.active_count(api_key) >= self._caps.get(api_key, 0):
            return answer(self._too_many(api_key))
        if self._credits < self._quote(spec, body, input_mp)[1]:
            return answer(_json_response({"detail": "Insufficient credits"}, 402))
        task = self._create_task(spec, body, input_mp, api_key)
        return answer(_json_response(self._submit_payload(task)), task)

    async def _sleep(self, seconds: float) -> None:
        """Sleep, but wake up early when the fake is closing."""
        if seconds > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), timeout=seconds)

    def _poll_prelude(self, request: web.Request) -> str | web.Response:
        """The poller's key, or the early answer (auth error or injected poll fault)."""
        self._settle()
        self.poll_count += 1
        api_key = self._authenticate(request)
        if isinstance(api_key, web.Response):
            return api_key
        if self.poll_faults:
            return self._fault_response(self.poll_faults.pop(0))
        return api_key

    def _visible_task(self, task_id: str, api_key: str) -> Task | None:
        """The task when it exists and belongs to ``api_key``'s account, else None.

        Another account's task is answered exactly like an unknown one, as BFL scopes
        tasks to the account: a client polling with the wrong key sees "Task not found".
        """
        task = self.tasks.get(task_id)
        if task is not None and task.owner_key != api_key:
            self.wrong_key_polls += 1
            return None
        return task

    async def _handle_poll(self, request: web.Request) -> web.StreamResponse:
        api_key = self._poll_prelude(request)
        if isinstance(api_key, web.Response):
            return api_key
        task_id = request.match_info["task_id"]
        task = self._visible_task(task_id, api_key)
        if task is None:
            return _json_response({"id": task_id, "status": "Task not found"})
        if request.match_info["region"] != task.region or request.query.get("token") != task.token:
            return _json_response({"detail": "Invalid or missing polling token"}, 403)
        task.polls += 1
        return await self._poll_answer(request, task)

    async def _poll_answer(self, request: web.Request, task: Task) -> web.StreamResponse:
        if self.endless_poll_body:
            endless = web.StreamResponse(headers={"Content-Type": "application/json"})
            endless.enable_chunked_encoding()
            await endless.prepare(request)
            with contextlib.suppress(ConnectionError):
                await endless.write(b'{"status": "Pending", "details": "')
                for _ in range(16 * 1024):  # at most 1 GiB: the client should hang up long before
                    await endless.write(b"x" * 65536)
            return endless
        payload = self._result_payload(task)
        if task.first_final_poll_at is None and (now := time.monotonic()) >= task.ready_at:
            task.first_final_poll_at = now
        if self.poll_padding:
            payload["padding"] = "x" * self.poll_padding
        return _json_response(payload)

    async def _handle_redirect(self, request: web.Request) -> web.Response:
        status = int(request.query.get("status", "302"))
        return web.Response(status=status, headers={"Location": request.query.get("to", "/")})

    async def _handle_get_result(self, request: web.Request) -> web.StreamResponse:
        api_key = self._poll_prelude(request)
        if isinstance(api_key, web.Response):
            return api_key
        task_id = request.query.get("id")
        if task_id is None:
            error = {"loc": ["query", "id"], "msg": "Field required", "type": "missing"}
            return _json_response({"detail": [error]}, 422)
        task = self._visible_task(task_id, api_key)
        if task is None:
            return _json_response({"id": task_id, "status": "Task not found"})
        task.polls += 1
        return await self._poll_answer(request, task)

    async def _handle_credits(self, request: web.Request) -> web.Response:
        self.credits_checks += 1
        api_key = self._authenticate(request)
        if isinstance(api_key, web.Response):
            return api_key
        return _json_response({"credits": round(self.credits, 2)})

    async def _handle_delivery(self, request: web.Request) -> web.Response:
        self._settle()
        task = self.tasks.get(request.match_info["task_id"])
        if (
            task is None
            or task.status != READY
            or request.match_info["filename"] != f"sample.{task.output_format}"
        ):
            return _xml_error(404, "BlobNotFound", "The specified blob does not exist.")
        if not hmac.compare_digest(request.query.get("sig", "").encode(), task.sig.encode()):
            return _xml_error(
                403, "AccessDenied", "Signature did not match. Request is not authorized."
            )
        if time.monotonic() > task.ready_at + self.result_ttl:
            return _xml_error(403, "AccessDenied", "Request has expired")
        self.downloads[task.id] += 1
        data = self.image_bytes(task.id)
        kind = "png" if data.startswith(PNG_SIGNATURE) else task.output_format
        return web.Response(body=data, content_type=CONTENT_TYPES[kind])

    # ------------------------------------------------------------------ webhooks

    async def _send_webhook(self, task: Task) -> None:
        while (left := task.ready_at - time.monotonic()) > 0:
            if math.isinf(left):  # held: wait for the release, then for the rest
                await self._released.wait()
            else:
                await asyncio.sleep(left)
        await asyncio.sleep(self.webhook_delay)
        self._settle()
        mode = self.webhook_mode
        if mode == "drop" or task.webhook_url is None:
            return
        payload = self._result_payload(task)
        payload = {
            "id": task.id,
            "task_id": task.id,
            "status": payload["status"],
            "result": payload["result"],
            "progress": 1,
            "details": payload["details"],
        }
        raw = json.dumps(payload).encode()
        secret = task.webhook_secret
        if mode == "wrong_secret":
            secret = "wrong-" + secrets.token_hex(8)
        headers = {"Content-Type": "application/json"}
        if secret is not None:
            if mode in ("secret", "both", "duplicate", "wrong_secret"):
                headers["X-Webhook-Secret"] = secret
            if mode in ("hmac", "both", "wrong_secret"):
                digest = hmac.new(secret.encode(), raw, hashlib.sha256).hexdigest()
                headers["X-BFL-Signature"] = f"sha256={digest}"
        for _ in range(2 if mode == "duplicate" else 1):
            await self._post_webhook(task, task.webhook_url, headers, raw)

    async def _post_webhook(
        self, task: Task, url: str, headers: dict[str, str], raw: bytes
    ) -> None:
        assert self._session is not None
        status: int | None = None
        error: str | None = None
        try:
            async with self._session.post(
                url,
                data=raw,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=self.webhook_timeout),
            ) as response:
                status = response.status
                await response.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            error = f"{type(exc).__name__}: {exc}"
        self.webhook_attempts.append(
            WebhookAttempt(
                url=url,
                task_id=task.id,
                status_code=status,
                error=error,
                headers=dict(headers),
                body=raw,
                sent_at=time.monotonic(),
            )
        )
