"""Reference images for edits: collect, check, download, verify — before anything is reserved
or sent to a provider.

Checks run cheapest first: count against the variant's limit, then the declared type and size
(no download), then the bytes themselves (real format from the file header, byte cap, and a
pixel cap that stops decompression bombs before Pillow decodes a single pixel), and last a
real (reduced where the format allows) decode: a file that is cut short or animated is refused
here rather than by the provider after it billed.

Downloads share one byte budget (`ByteBudget`) over all members, so many large references
asked for at once wait their turn instead of filling the memory.
"""

from __future__ import annotations

import asyncio
import io
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass

from PIL import Image

from bot.errors import InvalidRequest
from bot.images import ImageTooLarge, NotAnImage, inspect_image
from bot.providers.base import InputImage
from bot.variants import MEGAPIXEL, Variant

ACCEPTED_TYPES = {"image/png": "PNG", "image/jpeg": "JPEG", "image/webp": "WebP"}
GIF_MESSAGE = (
    "GIF images can't be used as references (FLUX.2 takes PNG, JPEG or WebP). "
    "Convert {name} to PNG and try again."
)
ANIMATED_MESSAGE = (
    "{name} is animated; references must be still images. Save one frame as a PNG or JPEG "
    "and try again."
)
DAMAGED_MESSAGE = (
    "{name} is damaged or incomplete (part of the image is missing), so it can't be a "
    "reference. Upload it again, or save it again as a PNG or JPEG."
)
# A reduced decode is enough to prove every byte of the image data is there: JPEG's draft
# mode decodes at 1/8 scale, far cheaper than the full image.
DRAFT_SCALE = 8


class ReferenceRejected(InvalidRequest):
    """A reference image breaks the rules; the message names the file and the rule."""


@dataclass(frozen=True)
class ReferenceLimits:
    max_bytes: int = 20 * 1024 * 1024
    max_pixels: int = 40 * MEGAPIXEL


@dataclass(frozen=True)
class ReferenceCandidate:
    """An image somebody pointed us at (an attachment), described by what Discord told us."""

    filename: str
    content_type: str | None
    size: int
    fetch: Callable[[], Awaitable[bytes]]
    width: int | None = None
    height: int | None = None
    uploaded: bool = True  # False for Fluxcord's own results (servers may limit uploads)

    @property
    def looks_like_image(self) -> bool:
        kind = (self.content_type or "").split(";")[0].strip().lower()
        if kind:
            return kind.startswith("image/")
        return self.filename.lower().endswith((".png", ".jpg", ".jpeg", ".webp", ".gif"))


def precheck(candidate: ReferenceCandidate, limits: ReferenceLimits) -> None:
    """Refuse what Discord's metadata already shows to be unusable, without downloading."""
    kind = (candidate.content_type or "").split(";")[0].strip().lower()
    if kind == "image/gif" or candidate.filename.lower().endswith(".gif"):
        raise ReferenceRejected(GIF_MESSAGE.format(name=candidate.filename))
    if kind and kind not in ACCEPTED_TYPES:
        raise ReferenceRejected(
            f"{candidate.filename} is not a PNG, JPEG or WebP image, so it can't be a reference."
        )
    _check_bytes(candidate.filename, candidate.size, limits)
    if candidate.width and candidate.height:
        _check_pixels(candidate.filename, candidate.width, candidate.height, limits)


def human_bytes(count: int) -> str:
    if count >= 1024 * 1024:
        return f"{count / 1024 / 1024:.1f} MB"
    return f"{max(1, round(count / 1024))} KB"


def _check_bytes(name: str, size: int, limits: ReferenceLimits) -> None:
    if size > limits.max_bytes:
        raise ReferenceRejected(
            f"{name} is {human_bytes(size)}; references can be at most "
            f"{human_bytes(limits.max_bytes)}."
        )


def _check_pixels(name: str, width: int, height: int, limits: ReferenceLimits) -> None:
    if width * height > limits.max_pixels:
        raise ReferenceRejected(
            f"{name} is {width}×{height} ({width * height / MEGAPIXEL:.0f} MP); references can "
            f"be at most {limits.max_pixels / MEGAPIXEL:.0f} MP."
        )


def verify_bytes(name: str, data: bytes, limits: ReferenceLimits) -> InputImage:
    """Check the downloaded bytes themselves. CPU-bound for big files: run it in a thread."""
    _check_bytes(name, len(data), limits)
    try:
        info = inspect_image(data)  # header only: nothing is decoded yet
    except ImageTooLarge:
        raise ReferenceRejected(
            f"{name} has far too many pixels; references can be at most "
            f"{limits.max_pixels / MEGAPIXEL:.0f} MP."
        ) from None
    except NotAnImage:
        raise ReferenceRejected(f"{name} is not a readable image.") from None
    if info.content_type == "image/gif":
        raise ReferenceRejected(GIF_MESSAGE.format(name=name))
    _check_pixels(name, info.width, info.height, limits)
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.verify()  # structural check (bad chunks, checksums) without keeping pixels
    except Exception:
        raise ReferenceRejected(DAMAGED_MESSAGE.format(name=name)) from None
    _decode(name, data)
    return InputImage(info.content_type, info.width, info.height, data)


def _decode(name: str, data: bytes) -> None:
    """Decode the pixels once (reduced where possible): `verify` misses a JPEG cut short or a
    PNG whose image data is missing, and says nothing about frames. CPU-bound: in a thread."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            if getattr(image, "is_animated", False) or getattr(image, "n_frames", 1) > 1:
                raise ReferenceRejected(ANIMATED_MESSAGE.format(name=name))
            width, height = image.size
            image.draft("RGB", (max(1, width // DRAFT_SCALE), max(1, height // DRAFT_SCALE)))
            image.load()  # raises on truncated data (LOAD_TRUNCATED_IMAGES stays off)
    except ReferenceRejected:
        raise
    except Exception:
        raise ReferenceRejected(DAMAGED_MESSAGE.format(name=name)) from None


class ByteBudget:
    """At most `capacity` bytes held by downloads at once, granted first come, first served.
    A single file larger than the whole budget waits until it can go alone."""

    def __init__(self, capacity: int) -> None:
        if capacity <= 0:
            raise ValueError("capacity must be positive")
        self.capacity = capacity
        self.in_use = 0
        self._waiters: deque[tuple[int, asyncio.Future[None]]] = deque()

    @asynccontextmanager
    async def hold(self, size: int) -> AsyncIterator[None]:
        need = min(max(size, 1), self.capacity)
        await self._acquire(need)
        try:
            yield
        finally:
            self._release(need)

    async def _acquire(self, need: int) -> None:
        if not self._waiters and self.in_use + need <= self.capacity:
            self.in_use += need
            return
        granted = asyncio.get_running_loop().create_future()
        waiter = (need, granted)
        self._waiters.append(waiter)
        try:
            await granted
        except asyncio.CancelledError:
            if granted.done() and not granted.cancelled():
                self._release(need)  # granted just as it was cancelled: hand it on
            else:
                self._waiters.remove(waiter)
                self._grant()  # it may have been holding up smaller requests behind it
            raise

    def _release(self, need: int) -> None:
        self.in_use -= need
        self._grant()

    def _grant(self) -> None:
        while self._waiters and self.in_use + self._waiters[0][0] <= self.capacity:
            need, granted = self._waiters.popleft()
            self.in_use += need
            granted.set_result(None)


async def load_references(
    candidates: Sequence[ReferenceCandidate],
    variant: Variant,
    limits: ReferenceLimits,
    *,
    budget: ByteBudget | None = None,
) -> list[InputImage]:
    """All checks, then the downloads (in parallel, within `budget`), then verification."""
    variant.check_reference_count(len(candidates))
    for candidate in candidates:
        precheck(candidate, limits)
    return await download_references(candidates, limits, budget=budget)


async def download_references(
    candidates: Sequence[ReferenceCandidate],
    limits: ReferenceLimits,
    *,
    budget: ByteBudget | None = None,
) -> list[InputImage]:
    """Download candidates that passed `precheck` (in parallel, within `budget`) and verify
    the bytes themselves."""

    async def load(candidate: ReferenceCandidate) -> InputImage:
        try:
            data = await candidate.fetch()
        except Exception:
            raise ReferenceRejected(
                f"{candidate.filename} could not be downloaded from Discord. Please try again."
            ) from None
        return await asyncio.to_thread(verify_bytes, candidate.filename, data, limits)

    async def load_within_budget(candidate: ReferenceCandidate) -> InputImage:
        if budget is None:
            return await load(candidate)
        # Held through the decode too: that is when the bytes (and pixels) are in memory.
        async with budget.hold(candidate.size or limits.max_bytes):
            return await load(candidate)

    return list(await asyncio.gather(*(load_within_budget(c) for c in candidates)))
