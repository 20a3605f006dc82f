"""What every image provider offers the job engine (its errors are in `bot.errors`)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

from bot.variants import JobParams, Variant


def reported_number(value: object) -> float | None:
    """A JSON number from a provider as a float, or None when it is not a number. Never
    raises: an integer too large for a float becomes infinity (for `sane_cost` to refuse)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        return float(value)
    except OverflowError:
        return math.inf if value > 0 else -math.inf


# Largest cost per job (credits) believed from a provider: nearly three times the priciest
# request the catalogue estimates at usual sizes (flex, 4 MP out, eight 4 MP references:
# 5 + 3×5 + 32×5 = 180 credits, $1.80).
DEFAULT_MAX_REPORTED_COST = 500.0


def sane_cost(reported: float | None, maximum: float) -> tuple[float | None, str | None]:
    """(cost to believe, why the reported one was not believed). A cost that is not finite,
    is negative or is above `maximum` credits is not believed at all: the job keeps its
    estimate (what the member agreed to when it was reserved) instead of a figure that would
    pay the member back (-5), charge them for ever (1e300) or break the ledger (nan)."""
    if reported is None:
        return None, None
    if not math.isfinite(reported):
        return None, "is not a finite number"
    if reported < 0:
        return None, "is negative"
    if reported > maximum:
        return None, f"is above MAX_REPORTED_COST_CREDITS ({maximum:g})"
    return reported, None


# A provider may round the size it was asked for (to a multiple of 16 or 32, or to a
# reference's aspect): up to twice the pixels asked for is believed. Far more is not what
# was asked for, and would cost hundreds of MB to decode (a 10000² PNG is ~12 KB on the wire).
RESULT_PIXEL_TOLERANCE = 2


def result_pixel_limit(variant: Variant, params: JobParams, *, has_references: bool) -> int:
    """The most pixels a result of this request may have: the tolerance times the size it
    asked for, else the model's default size, or with references and no size (the output
    follows the first reference) the most the model makes."""
    if has_references and not (params.width and params.height):
        asked = variant.sizes.max_pixels
    else:
        width, height = variant.output_size(params, [])
        asked = width * height
    return asked * RESULT_PIXEL_TOLERANCE


class TaskOutcome(StrEnum):
    RUNNING = "running"
    READY = "ready"
    MODERATED = "moderated"
    FAILED = "failed"
    NOT_FOUND = "not_found"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class InputImage:
    content_type: str
    width: int
    height: int
    data: bytes


@dataclass(frozen=True)
class OutputImage:
    content_type: str
    width: int
    height: int
    data: bytes

    @property
    def extension(self) -> str:
        return {"image/png": "png", "image/webp": "webp"}.get(self.content_type, "jpg")


@dataclass(frozen=True)
class WebhookRequest:
    """Where the provider should report the task's end, and the secret proving it is them."""

    url: str
    secret: str = field(repr=False)  # never in a repr, so never in a log line


@dataclass(frozen=True)
class Submission:
    task_id: str
    polling_url: str | None
    cost: float | None = None
    # Set by synchronous providers (the AI/ML API answers with the finished images): the task
    # has already ended, so the engine completes the job from this instead of polling.
    result: TaskResult | None = None


@dataclass(frozen=True)
class TaskResult:
    """One status reading of a submitted task."""

    outcome: TaskOutcome
    raw_status: str
    sample_urls: tuple[str, ...] = ()
    seed: int | None = None
    cost: float | None = None
    details: dict[str, Any] = field(default_factory=dict)
    progress: float | None = None


class Provider(Protocol):
    """An image provider as the job engine uses it."""

    name: str
    supports_webhooks: bool

    async def submit(
        self,
        variant: Variant,
        params: JobParams,
        inputs: list[InputImage],
        *,
        user_id: int,
        webhook: WebhookRequest | None = None,
    ) -> Submission: ...

    async def poll(self, task_id: str, polling_url: str | None) -> TaskResult: ...

    async def download(self, url: str, *, max_pixels: int | None = None) -> OutputImage:
        """A result image; refused (`UntrustedResultSize`) when its header says more than
        `max_pixels`, before anything decodes it."""
        ...

    async def aclose(self) -> None: ...
