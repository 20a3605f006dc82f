"""Reference images for edits: collect, check, download, verify — before anything is reserved
or sent to a provider.

Checks run cheapest first: count against the variant's limit, then the declared type and size
(no download), then the bytes themselves (real format from the file header, byte cap, and a
pixel cap that stops decompression bombs before Pillow decodes a single pixel).
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from PIL import Image

from bot.images import ImageTooLarge, NotAnImage, inspect_image
from bot.providers.base import InputImage
from bot.variants import MEGAPIXEL, InvalidRequest, Variant

ACCEPTED_TYPES = {"image/png": "PNG", "image/jpeg": "JPEG", "image/webp": "WebP"}
GIF_MESSAGE = (
    "GIF images can't be used as references (FLUX.2 takes PNG, JPEG or WebP). "
    "Convert {name} to PNG and try again."
)


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
            image.verify()  # structural check (truncation, bad chunks) without keeping pixels
    except Exception:
        raise ReferenceRejected(f"{name} is damaged or incomplete.") from None
    return InputImage(info.content_type, info.width, info.height, data)


async def load_references(
    candidates: Sequence[ReferenceCandidate], variant: Variant, limits: ReferenceLimits
) -> list[InputImage]:
    """All checks, then the downloads (in parallel), then byte-level verification."""
    variant.check_reference_count(len(candidates))
    for candidate in candidates:
        precheck(candidate, limits)

    async def load(candidate: ReferenceCandidate) -> InputImage:
        try:
            data = await candidate.fetch()
        except Exception:
            raise ReferenceRejected(
                f"{candidate.filename} could not be downloaded from Discord. Please try again."
            ) from None
        return await asyncio.to_thread(verify_bytes, candidate.filename, data, limits)

    return list(await asyncio.gather(*(load(c) for c in candidates)))
