"""What a reference costs to decode, read from its header before any pixel is decoded; the
decode budget shared by every member; the reduced decode that verifies a reference."""

from __future__ import annotations

import asyncio
import contextlib
import io
import struct
import threading
import zlib
from collections.abc import Iterator
from typing import Any

import pytest
from PIL import Image, ImageFile

from bot import references
from bot.images import inspect_image
from bot.references import (
    DAMAGED_MESSAGE,
    STILL_CHECKING_MESSAGE,
    ReferenceCandidate,
    ReferenceChecks,
    ReferenceLimits,
    ReferenceRejected,
    StillChecking,
    verify_bytes,
)
from bot.variants import MEGAPIXEL
from tests.hostile_images import BOMB_SIDE, bomb_png, small_image, zero_png

MiB = 1024 * 1024
LIMITS = ReferenceLimits()  # the defaults: 20 MB, 40 MP


def gradient(size: tuple[int, int]) -> Image.Image:
    return Image.linear_gradient("L").resize(size).convert("RGB")


def jpeg(size: tuple[int, int], **options: Any) -> bytes:
    buffer = io.BytesIO()
    gradient(size).save(buffer, "JPEG", **options)
    return buffer.getvalue()


def candidate(name: str, data: bytes) -> ReferenceCandidate:
    async def fetch() -> bytes:
        return data

    return ReferenceCandidate(name, "image/png", len(data), fetch)


# ---------------------------------------------------------------------- the cost, from the header
def test_a_png_costs_four_bytes_a_pixel_whatever_its_file_size() -> None:
    info = inspect_image(bomb_png())
    assert len(bomb_png()) < 200_000  # tiny on the wire…
    assert info.decode_bytes == BOMB_SIDE * BOMB_SIDE * 4  # …160 MB in memory


def test_webp_costs_four_images_worth() -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (1000, 500)).save(buffer, "WEBP", lossless=True)
    assert inspect_image(buffer.getvalue()).decode_bytes == 1000 * 500 * 16


def test_a_sequential_jpeg_costs_only_its_reduced_decode() -> None:
    info = inspect_image(jpeg((4000, 3000)))
    assert info.decode_bytes == 500 * 375 * 4  # 1/8 scale: 0.75 MB, not 48 MB


@pytest.mark.parametrize(
    ("subsampling", "samples_per_pixel"),
    [(2, 1.5), (0, 3.0)],  # 4:2:0 and 4:4:4
)
def test_a_progressive_jpeg_costs_every_coefficient(
    subsampling: int, samples_per_pixel: float
) -> None:
    """libjpeg keeps the whole image's DCT coefficients (2 bytes a sample) for a progressive
    JPEG, whatever scale it is decoded at."""
    data = jpeg((4000, 3008), progressive=True, subsampling=subsampling)
    coefficients = int(4000 * 3008 * samples_per_pixel * 2)
    assert inspect_image(data).decode_bytes == coefficients + 500 * 376 * 4


def test_a_jpeg_whose_markers_cannot_be_followed_costs_the_worst_case() -> None:
    data = jpeg((800, 600))
    after_app0 = 4 + int.from_bytes(data[4:6], "big")  # SOI, then the JFIF segment
    garbled = data[:after_app0] + b"\x00\x00" + data[after_app0:]  # where a marker should be
    info = inspect_image(garbled)
    assert (info.width, info.height) == (800, 600)  # Pillow skips them…
    # …the walk does not: four full-resolution components are assumed, all kept whole.
    assert info.decode_bytes == 800 * 600 * 4 * 2 + 100 * 75 * 4


def test_compressed_text_chunks_cannot_fill_the_memory_while_the_header_is_read() -> None:
    """Pillow inflates a PNG's zTXt chunks as it opens it: 60 KB could hold 60 MB of text."""
    data = small_image("PNG")
    text = zlib.compress(bytes(1_000_000), 9)
    chunks = b"".join(
        _chunk(b"zTXt", f"k{n}".encode() + b"\0\0" + text) for n in range(6)
    )  # 6 MB of text in about 6 KB
    with pytest.raises(ReferenceRejected, match=r"notes\.png is not a readable image"):
        verify_bytes("notes.png", data[:33] + chunks + data[33:], LIMITS)


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


# ---------------------------------------------------------------------- the reduced verify
def test_a_broken_zlib_checksum_passes_verify_and_is_refused_by_the_decode() -> None:
    data = zero_png(1024, 1024, broken_checksum=True)
    with Image.open(io.BytesIO(data)) as image:
        image.verify()  # every chunk CRC is right: Pillow's structural check passes
    with pytest.raises(ReferenceRejected, match=r"^zlib\.png is damaged or incomplete"):
        verify_bytes("zlib.png", data, LIMITS)
    assert verify_bytes("fine.png", zero_png(1024, 1024), LIMITS).width == 1024


def test_a_jpeg_is_verified_at_an_eighth_of_its_size(monkeypatch: pytest.MonkeyPatch) -> None:
    loaded: list[tuple[str | None, tuple[int, int]]] = []
    original = ImageFile.ImageFile.load

    def recording(self: ImageFile.ImageFile) -> Any:
        loaded.append((self.format, self.size))
        return original(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", recording)
    assert verify_bytes("photo.jpg", jpeg((4000, 3000)), LIMITS).width == 4000
    assert ("JPEG", (500, 375)) in loaded and ("JPEG", (4000, 3000)) not in loaded


# ---------------------------------------------------------------------- the decode budget
@contextlib.contextmanager
def released(gate: threading.Event, checks: ReferenceChecks) -> Iterator[None]:
    """Whatever the test's outcome, the blocked thread is let go (else pytest never exits)."""
    try:
        yield
    finally:
        gate.set()
        checks.close()


async def test_decodes_wait_for_room_in_the_budget() -> None:
    checks = ReferenceChecks(decode_megapixels=1, threads=2)  # 4 MiB: the budget decides
    started, gate = threading.Event(), threading.Event()

    def blocking() -> str:
        started.set()
        gate.wait()
        return "first"

    with released(gate, checks):
        first = asyncio.create_task(checks.in_thread(3 * MiB, blocking))
        second = asyncio.create_task(checks.in_thread(3 * MiB, lambda: "second"))
        await asyncio.to_thread(started.wait)
        assert checks.decoding.in_use == 3 * MiB and not second.done()  # 6 MiB won't fit
        gate.set()
        assert [await first, await second] == ["first", "second"]
        assert checks.decoding.in_use == 0


async def test_a_cancelled_caller_frees_nothing_its_thread_still_uses() -> None:
    """A request refused or abandoned mid-decode: the thread runs on, so its memory still
    counts until the thread is done."""
    checks = ReferenceChecks(decode_megapixels=1, threads=2)
    started, gate = threading.Event(), threading.Event()

    def blocking() -> None:
        started.set()
        gate.wait()

    with released(gate, checks):
        abandoned = asyncio.create_task(checks.in_thread(3 * MiB, blocking))
        await asyncio.to_thread(started.wait)
        abandoned.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await abandoned
        assert checks.decoding.in_use == 3 * MiB
        waiting = asyncio.create_task(checks.in_thread(3 * MiB, lambda: "after"))
        await asyncio.sleep(0)
        assert not waiting.done()
        gate.set()
        assert await waiting == "after"
        assert checks.decoding.in_use == 0


async def test_a_reference_that_alone_would_overflow_the_budget_is_refused_undecoded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    decoded: list[str] = []
    monkeypatch.setattr(references, "_decode", lambda name, data: decoded.append(name))
    checks = ReferenceChecks(decode_megapixels=1)
    with pytest.raises(ReferenceRejected) as refused:
        await checks.load([candidate("big.png", zero_png(1200, 1000))], LIMITS)
    assert str(refused.value) == (
        "big.png (1200×1000) would take more memory to check than I can set aside for one "
        "image: in this format it can be at most about 1 MP. Save it smaller and try again."
    )
    assert decoded == []
    await checks.load([candidate("fits.png", zero_png(1000, 1000))], LIMITS)
    assert decoded == ["fits.png"]
    checks.close()


async def test_hostile_pngs_from_many_requests_decode_within_the_budget() -> None:
    """Twelve PNGs that are tiny on the wire (three of them with a broken checksum) from four
    requests at once, with room for one decode at a time: never two side by side, and each
    request answered."""
    # One 4 MP RGBA PNG fits, two don't; two threads, so only the budget holds them back.
    checks = ReferenceChecks(decode_megapixels=5, threads=2)
    active = peak = 0
    lock = threading.Lock()
    original = references._decode

    def counting(name: str, data: bytes) -> None:
        nonlocal active, peak
        with lock:
            active += 1
            peak = max(peak, active)
        try:
            original(name, data)
        finally:
            with lock:
                active -= 1

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(references, "_decode", counting)
        good, broken = zero_png(2048, 2048), zero_png(2048, 2048, broken_checksum=True)
        requests = [
            [candidate("a.png", good), candidate("b.png", good), candidate("c.png", broken)]
            for _ in range(3)
        ] + [[candidate("d.png", good)] * 3]
        results = await asyncio.gather(
            *(checks.load(files, LIMITS, member_id=n) for n, files in enumerate(requests)),
            return_exceptions=True,
        )
    assert peak == 1
    for failure in results[:3]:
        assert isinstance(failure, ReferenceRejected)
        assert str(failure) == DAMAGED_MESSAGE.format(name="c.png")
    accepted = results[3]
    assert isinstance(accepted, list) and [i.width for i in accepted] == [2048] * 3
    assert checks.decoding.in_use == 0 and checks.downloads.in_use == 0
    checks.close()


async def test_a_member_has_one_request_checked_at_a_time() -> None:
    checks = ReferenceChecks()
    release = asyncio.Event()
    data = small_image("PNG")

    async def slow_fetch() -> bytes:
        await release.wait()
        return data

    slow = ReferenceCandidate("slow.png", "image/png", len(data), slow_fetch)
    first = asyncio.create_task(checks.load([slow], LIMITS, member_id=1))
    await asyncio.sleep(0)
    with pytest.raises(StillChecking, match=STILL_CHECKING_MESSAGE):
        checks.check_member_free(1)
    with pytest.raises(StillChecking):
        await checks.load([candidate("again.png", data)], LIMITS, member_id=1)
    assert len(await checks.load([candidate("other.png", data)], LIMITS, member_id=2)) == 1
    release.set()
    assert len(await first) == 1
    assert len(await checks.load([candidate("later.png", data)], LIMITS, member_id=1)) == 1
    checks.close()


def test_the_default_budget_holds_one_40_mp_png_and_not_two() -> None:
    checks = ReferenceChecks()
    cost = inspect_image(bomb_png()).decode_bytes
    assert cost <= checks.decoding.capacity < 2 * cost
    assert checks.decoding.capacity == 48 * MEGAPIXEL * 4
    checks.close()
