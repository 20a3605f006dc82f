"""Reference images for edits: collect, check, download, verify — before anything is reserved
or sent to a provider.

Checks run cheapest first: count against the variant's limit, then the declared type and size
(no download), then the bytes themselves (real format from the file header, byte cap, and a
pixel cap that stops decompression bombs before Pillow decodes a single pixel), and last a
real (reduced where the format allows) decode: a file that is cut short or animated is refused
here rather than by the provider after it billed.

What is small on the wire can be huge in memory (a 155 KB PNG of 40 MP decodes to 160 MB),
so `ReferenceChecks`, shared by every member, bounds both: downloads share a byte budget, and
decodes share a budget of decoded memory, reckoned from each header before a pixel is
decoded, and run in a thread of their own (never the event loop, nor the default executor
that resolves provider names). A reference that alone would need more than the
whole decode budget is refused; a member has one request's references checked at a time.
"""

from __future__ import annotations

import asyncio
import io
import math
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import asynccontextmanager, contextmanager, suppress
from dataclasses import dataclass
from typing import TypeVar

from PIL import Image

from bot.errors import InvalidRequest
from bot.images import (
    BYTES_PER_PIXEL,
    JPEG_DRAFT_SCALE,
    ImageInfo,
    ImageTooLarge,
    NotAnImage,
    inspect_image,
)
from bot.providers.base import InputImage
from bot.variants import MEGAPIXEL, Variant

T = TypeVar("T")

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
TOO_COSTLY_MESSAGE = (
    "{name} ({width}×{height}) would take more memory to check than I can set aside for one "
    "image: in this format it can be at most about {most} MP. Save it smaller and try again."
)
STILL_CHECKING_MESSAGE = (
    "I'm still checking the images of your last request. Wait for its answer, then try again."
)
DEFAULT_DOWNLOAD_BUDGET_BYTES = 64 * 1024 * 1024
DEFAULT_DECODE_BUDGET_MEGAPIXELS = 48
# Threads that read headers and decode references: one core at most, whatever is queued
# (decoding releases the GIL). One, too, because glibc gives each thread a malloc arena of
# its own and pixels freed in one are not reused by another: with two threads, one 160 MB
# decode at a time still held 270 MiB; with one, 158 MiB.
DECODE_THREADS = 1


class ReferenceRejected(InvalidRequest):
    """A reference image breaks the rules; the message names the file and the rule."""


class StillChecking(InvalidRequest):
    """The member's previous request is still having its references checked."""

    def __init__(self) -> None:
        super().__init__(STILL_CHECKING_MESSAGE)


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
    """Check the downloaded bytes themselves, all in one go (no budget: `ReferenceChecks`
    is the bounded way). CPU-bound for big files: run it in a thread."""
    info = read_header(name, data, limits)
    _decode(name, data)
    return InputImage(info.content_type, info.width, info.height, data)


def read_header(name: str, data: bytes, limits: ReferenceLimits) -> ImageInfo:
    """Every check the header alone answers: size, real format, pixel count, frames, and
    what a decode would cost. Nothing is decoded. Raises ReferenceRejected."""
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
    if info.frames > 1:
        raise ReferenceRejected(ANIMATED_MESSAGE.format(name=name))
    return info


def _decode(name: str, data: bytes) -> None:
    """Verify the structure (chunks, checksums), then decode the pixels once, reduced where
    the format allows: `verify` misses a JPEG cut short or a PNG whose image data is missing
    or whose zlib checksum is wrong. CPU-bound: in a thread."""
    if not _decodes_whole(data):
        # Raised out here, with no link to Pillow's error: its traceback holds the decoder,
        # and the decoder the pixels (160 MB for a 40 MP PNG) for as long as it lives.
        raise ReferenceRejected(DAMAGED_MESSAGE.format(name=name))


def _decodes_whole(data: bytes) -> bool:
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.verify()  # structural check without keeping pixels
        with Image.open(io.BytesIO(data)) as image:
            # A reduced decode is enough to prove every byte of the image data is there:
            # JPEG's draft mode decodes at 1/8 scale (the other formats decode in full).
            width, height = image.size
            scale = JPEG_DRAFT_SCALE
            image.draft("RGB", (max(1, width // scale), max(1, height // scale)))
            image.load()  # raises on truncated data (LOAD_TRUNCATED_IMAGES stays off)
    except Exception:
        return False
    return True


class ByteBudget:
    """At most `capacity` bytes held at once, granted first come, first served. A single
    request larger than the whole budget waits until it can go alone."""

    def __init__(self, capacity: int) -> None:
        if capacity <= 0:
            raise ValueError("capacity must be positive")
        self.capacity = capacity
        self.in_use = 0
        self._waiters: deque[tuple[int, asyncio.Future[None]]] = deque()

    @asynccontextmanager
    async def hold(self, size: int) -> AsyncIterator[None]:
        need = await self.acquire(size)
        try:
            yield
        finally:
            self.release(need)

    async def acquire(self, size: int) -> int:
        """Wait for `size` bytes (at most the whole budget); returns what to `release`."""
        need = min(max(size, 1), self.capacity)
        if not self._waiters and self.in_use + need <= self.capacity:
            self.in_use += need
            return need
        granted = asyncio.get_running_loop().create_future()
        waiter = (need, granted)
        self._waiters.append(waiter)
        try:
            await granted
        except asyncio.CancelledError:
            if granted.done() and not granted.cancelled():
                self.release(need)  # granted just as it was cancelled: hand it on
            else:
                self._waiters.remove(waiter)
                self._grant()  # it may have been holding up smaller requests behind it
            raise
        return need

    def release(self, need: int) -> None:
        self.in_use -= need
        self._grant()

    def _grant(self) -> None:
        while self._waiters and self.in_use + self._waiters[0][0] <= self.capacity:
            need, granted = self._waiters.popleft()
            self.in_use += need
            granted.set_result(None)


class ReferenceChecks:
    """What every member's reference checks share: the bytes being downloaded, the memory
    being decoded into (and the thread decoding), and who has a check under way."""

    def __init__(
        self,
        *,
        download_bytes: int = DEFAULT_DOWNLOAD_BUDGET_BYTES,
        decode_megapixels: float = DEFAULT_DECODE_BUDGET_MEGAPIXELS,
        threads: int = DECODE_THREADS,
    ) -> None:
        self.downloads = ByteBudget(download_bytes)
        # Megapixels as Pillow holds most images, 4 bytes each; a header says what a decode
        # really needs (less for a JPEG decoded reduced, more for WebP).
        self.decoding = ByteBudget(math.ceil(decode_megapixels * MEGAPIXEL * BYTES_PER_PIXEL))
        self._threads = ThreadPoolExecutor(threads, thread_name_prefix="reference-check")
        self._members: set[int] = set()

    def check_member_free(self, member_id: int) -> None:
        """Refuse a member whose previous request's references are still being checked: one
        member never has more than one request's files waiting for the budgets."""
        if member_id in self._members:
            raise StillChecking()

    async def load(
        self,
        candidates: Sequence[ReferenceCandidate],
        limits: ReferenceLimits,
        *,
        member_id: int | None = None,
    ) -> list[InputImage]:
        """Download candidates that passed `precheck` (in parallel, within the budgets) and
        verify the bytes themselves. The first refusal ends the others' downloads and waits."""
        if not candidates:
            return []
        with self._member(member_id):
            tasks = [asyncio.create_task(self._load_one(c, limits)) for c in candidates]
            try:
                await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            finally:
                for task in tasks:
                    task.cancel()  # no-op once done; a running decode finishes in its thread
                await asyncio.gather(*tasks, return_exceptions=True)
        for task in tasks:  # the first refused file in the member's order is named
            if not task.cancelled() and (failure := task.exception()) is not None:
                raise failure
        return [task.result() for task in tasks]

    @contextmanager
    def _member(self, member_id: int | None) -> Iterator[None]:
        if member_id is None:
            yield
            return
        self.check_member_free(member_id)
        self._members.add(member_id)
        try:
            yield
        finally:
            self._members.discard(member_id)

    async def _load_one(self, candidate: ReferenceCandidate, limits: ReferenceLimits) -> InputImage:
        name = candidate.filename
        # Held until the check ends: the downloaded bytes are in memory all that time.
        async with self.downloads.hold(candidate.size or limits.max_bytes):
            try:
                data = await candidate.fetch()
            except Exception:
                raise ReferenceRejected(
                    f"{name} could not be downloaded from Discord. Please try again."
                ) from None
            info = await self.in_thread(0, read_header, name, data, limits)
            if info.decode_bytes > self.decoding.capacity:
                raise ReferenceRejected(self._too_costly(name, info))
            await self.in_thread(info.decode_bytes, _decode, name, data)
        return InputImage(info.content_type, info.width, info.height, data)

    async def in_thread(self, cost: int, function: Callable[..., T], *args: object) -> T:
        """`function(*args)` in a check thread, holding `cost` bytes of the decode budget
        until the thread is done: a caller cancelled meanwhile frees nothing still in use."""
        need = await self.decoding.acquire(cost) if cost else 0
        loop = asyncio.get_running_loop()
        try:
            future = self._threads.submit(function, *args)
        except BaseException:
            self.decoding.release(need)
            raise
        if need:

            def done(_: Future[T]) -> None:
                with suppress(RuntimeError):  # the loop is gone: so is the budget
                    loop.call_soon_threadsafe(self.decoding.release, need)

            future.add_done_callback(done)
        return await asyncio.wrap_future(future, loop=loop)

    async def fit(self, image: InputImage, size: tuple[int, int]) -> InputImage:
        """The image resized to `size` (a canvas tool scales it with its canvas: see
        bot/tools/canvas.py), in a check thread within the decode budget."""
        if (image.width, image.height) == size:
            return image
        cost = 4 * (image.width * image.height + size[0] * size[1])  # RGBA, both images
        return await self.in_thread(cost, resize_input, image, *size)

    def _too_costly(self, name: str, info: ImageInfo) -> str:
        per_pixel = info.decode_bytes / max(1, info.width * info.height)
        most = self.decoding.capacity / per_pixel / MEGAPIXEL
        return TOO_COSTLY_MESSAGE.format(
            name=name, width=info.width, height=info.height, most=max(1, math.floor(most))
        )

    def close(self) -> None:
        """Stop the check threads (a decode under way finishes first)."""
        self._threads.shutdown(wait=False, cancel_futures=True)


def resize_input(image: InputImage, width: int, height: int) -> InputImage:
    """`image` resized to `width`×`height`: JPEG stays JPEG (quality 95), anything else
    becomes PNG. CPU-bound: in a thread (`ReferenceChecks.fit`)."""
    with Image.open(io.BytesIO(image.data)) as source:
        source.load()
        jpeg = source.format == "JPEG"
        picture = source.convert("RGB" if jpeg else "RGBA").resize(
            (width, height), Image.Resampling.LANCZOS
        )
    buffer = io.BytesIO()
    if jpeg:
        picture.save(buffer, "JPEG", quality=95)
    else:
        picture.save(buffer, "PNG")
    return InputImage("image/jpeg" if jpeg else "image/png", width, height, buffer.getvalue())


async def load_references(
    candidates: Sequence[ReferenceCandidate],
    variant: Variant,
    limits: ReferenceLimits,
    *,
    checks: ReferenceChecks | None = None,
    member_id: int | None = None,
) -> list[InputImage]:
    """All checks, then the downloads and verification (within `checks`' budgets)."""
    variant.check_reference_count(len(candidates))
    for candidate in candidates:
        precheck(candidate, limits)
    return await download_references(candidates, limits, checks=checks, member_id=member_id)


async def download_references(
    candidates: Sequence[ReferenceCandidate],
    limits: ReferenceLimits,
    *,
    checks: ReferenceChecks | None = None,
    member_id: int | None = None,
) -> list[InputImage]:
    """Download candidates that passed `precheck` and verify the bytes themselves, within
    `checks`' budgets (shared by every member; without one, within budgets of their own)."""
    if checks is not None:
        return await checks.load(candidates, limits, member_id=member_id)
    own = ReferenceChecks()
    try:
        return await own.load(candidates, limits, member_id=member_id)
    finally:
        own.close()
