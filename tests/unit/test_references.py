"""Reference checks: what is refused before download, after download, and what passes."""

from __future__ import annotations

import asyncio
import contextlib
import io
import random
import struct
import threading
import zlib

import pytest
from PIL import Image

from bot import references
from bot.catalogue import get_variant
from bot.errors import InvalidRequest
from bot.references import (
    ByteBudget,
    ReferenceCandidate,
    ReferenceChecks,
    ReferenceLimits,
    ReferenceRejected,
    load_references,
    precheck,
    verify_bytes,
)
from bot.variants import MEGAPIXEL

LIMITS = ReferenceLimits(max_bytes=200_000, max_pixels=MEGAPIXEL)


def encode(kind: str, size: tuple[int, int] = (40, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (20, 40, 60)).save(buffer, kind)
    return buffer.getvalue()


def candidate(name: str, data: bytes, content_type: str | None, **extra: int) -> ReferenceCandidate:
    async def fetch() -> bytes:
        fetched.append(name)
        return data

    return ReferenceCandidate(name, content_type, len(data), fetch, **extra)


fetched: list[str] = []


@pytest.mark.parametrize(
    ("kind", "mime"), [("PNG", "image/png"), ("JPEG", "image/jpeg"), ("WEBP", "image/webp")]
)
def test_accepted_formats_are_verified_from_their_bytes(kind: str, mime: str) -> None:
    image = verify_bytes("x", encode(kind), LIMITS)
    assert (image.content_type, image.width, image.height) == (mime, 40, 30)


def test_the_real_format_wins_over_the_declared_one() -> None:
    gif = encode("GIF")
    with pytest.raises(ReferenceRejected, match="GIF images can't be used"):
        verify_bytes("sneaky.png", gif, LIMITS)


def test_truncated_images_are_refused() -> None:
    data = encode("PNG", (200, 200))
    with pytest.raises(ReferenceRejected, match=r"damaged or incomplete|not a readable image"):
        verify_bytes("cut.png", data[: len(data) // 2], LIMITS)


def test_pixel_cap_applies_to_declared_and_real_sizes() -> None:
    with pytest.raises(ReferenceRejected, match=r"is 2000×2000 \(4 MP\)"):
        precheck(candidate("a.png", b"x", "image/png", width=2000, height=2000), LIMITS)
    with pytest.raises(ReferenceRejected, match=r"is 1100×1000 \(1 MP\)"):
        verify_bytes("b.png", encode("PNG", (1100, 1000)), LIMITS)


async def test_nothing_is_downloaded_when_any_candidate_fails_a_precheck() -> None:
    fetched.clear()
    good = candidate("good.png", encode("PNG"), "image/png")
    bad = candidate("bad.txt", b"hello", "text/plain")
    with pytest.raises(ReferenceRejected, match=r"bad\.txt is not a PNG, JPEG or WebP image"):
        await load_references([good, bad], get_variant("pro"), LIMITS)
    assert fetched == []


async def test_too_many_references_name_the_limit_before_any_download() -> None:
    fetched.clear()
    many = [candidate(f"{n}.png", encode("PNG"), "image/png") for n in range(5)]
    with pytest.raises(InvalidRequest, match="at most 4 reference images; you gave 5"):
        await load_references(many, get_variant("klein-4b"), LIMITS)
    assert fetched == []


async def test_download_failures_are_reported_by_name() -> None:
    async def broken() -> bytes:
        raise ConnectionError("cdn down")

    with pytest.raises(ReferenceRejected, match=r"x\.png could not be downloaded from Discord"):
        await load_references(
            [ReferenceCandidate("x.png", "image/png", 10, broken)], get_variant("pro"), LIMITS
        )


async def test_good_references_keep_their_order_and_bytes() -> None:
    first, second = encode("PNG"), encode("JPEG")
    images = await load_references(
        [candidate("1.png", first, "image/png"), candidate("2.jpg", second, "image/jpeg")],
        get_variant("pro"),
        LIMITS,
    )
    assert [i.data for i in images] == [first, second]


# ---------------------------------------------------------------------- decoding (crafted bytes)
def noisy(size: tuple[int, int]) -> Image.Image:
    """Incompressible pixels: the image data fills most of the file, so a cut lands in it."""
    rng = random.Random(size[0] * 31 + size[1])
    return Image.frombytes("RGB", size, rng.randbytes(size[0] * size[1] * 3))


def save(image: Image.Image, kind: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, kind, **options)
    return buffer.getvalue()


def png_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    """(type, whole chunk) for each chunk after the PNG signature."""
    chunks, position = [], 8
    while position < len(data):
        (length,) = struct.unpack(">I", data[position : position + 4])
        chunk = data[position : position + 12 + length]
        chunks.append((chunk[4:8], chunk))
        position += len(chunk)
    return chunks


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    crc = zlib.crc32(kind + payload)
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)


def test_a_jpeg_cut_short_is_refused_as_incomplete() -> None:
    data = save(noisy((256, 256)), "JPEG", quality=90)
    verify_bytes("whole.jpg", data, LIMITS)  # the uncut file passes
    with pytest.raises(ReferenceRejected, match=r"cut\.jpg is damaged or incomplete"):
        verify_bytes("cut.jpg", data[: len(data) * 2 // 3], LIMITS)


def test_a_png_without_its_image_data_is_refused() -> None:
    data = save(noisy((64, 64)), "PNG")
    no_pixels = data[:8] + b"".join(c for kind, c in png_chunks(data) if kind != b"IDAT")
    with pytest.raises(ReferenceRejected, match=r"empty\.png is damaged or incomplete"):
        verify_bytes("empty.png", no_pixels, LIMITS)


def test_a_png_whose_image_data_stops_early_is_refused() -> None:
    """Every chunk well-formed (checksums right), but the pixels end after a few rows."""
    data = save(noisy((64, 64)), "PNG")
    pixels = zlib.decompress(b"".join(c[8:-4] for kind, c in png_chunks(data) if kind == b"IDAT"))
    short = png_chunk(b"IDAT", zlib.compress(pixels[:1000]))
    chunks = [short if kind == b"IDAT" else c for kind, c in png_chunks(data)]
    with pytest.raises(ReferenceRejected, match=r"short\.png is damaged or incomplete"):
        verify_bytes("short.png", data[:8] + b"".join(dict.fromkeys(chunks)), LIMITS)


@pytest.mark.parametrize(("name", "kind"), [("moving.png", "PNG"), ("moving.webp", "WEBP")])
def test_animated_images_are_refused_by_name(name: str, kind: str) -> None:
    frames = [Image.new("RGB", (32, 32), (80 * n, 0, 0)) for n in range(3)]
    data = save(frames[0], kind, save_all=True, append_images=frames[1:])
    with pytest.raises(ReferenceRejected, match=rf"{name} is animated; references must be still"):
        verify_bytes(name, data, LIMITS)
    # One frame of the same picture is fine.
    assert verify_bytes("still", save(frames[0], kind), LIMITS).width == 32


def test_an_animated_gif_is_refused_even_under_another_name() -> None:
    frames = [Image.new("RGB", (32, 32), (0, 80 * n, 0)) for n in range(2)]
    data = save(frames[0], "GIF", save_all=True, append_images=frames[1:])
    with pytest.raises(ReferenceRejected, match="GIF images can't be used"):
        verify_bytes("disguised.png", data, LIMITS)


async def test_the_decode_runs_off_the_event_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    loop_thread = threading.get_ident()
    decoded_in: list[int] = []
    original = references._decode

    def spy(name: str, data: bytes) -> None:
        decoded_in.append(threading.get_ident())
        original(name, data)

    monkeypatch.setattr(references, "_decode", spy)
    await load_references(
        [candidate("a.png", encode("PNG"), "image/png")], get_variant("pro"), LIMITS
    )
    assert decoded_in and loop_thread not in decoded_in


# ---------------------------------------------------------------------- the download budget
async def test_downloads_share_one_byte_budget() -> None:
    """With room for two files at once, the third waits until one is done."""
    checks = ReferenceChecks(download_bytes=2 * 1000)
    budget = checks.downloads
    started: list[str] = []
    release = asyncio.Event()

    def slow(name: str) -> ReferenceCandidate:
        data = encode("PNG")

        async def fetch() -> bytes:
            started.append(name)
            await release.wait()
            return data

        return ReferenceCandidate(name, "image/png", 1000, fetch)

    task = asyncio.create_task(
        load_references(
            [slow("1.png"), slow("2.png"), slow("3.png")], get_variant("pro"), LIMITS, checks=checks
        )
    )
    for _ in range(20):
        await asyncio.sleep(0)
    assert started == ["1.png", "2.png"] and budget.in_use == 2000
    release.set()
    images = await task
    assert len(images) == 3 and started[2] == "3.png" and budget.in_use == 0


async def test_a_file_larger_than_the_budget_goes_alone_and_a_cancelled_wait_gives_way() -> None:
    budget = ByteBudget(100)
    async with budget.hold(60):
        big = asyncio.create_task(budget.hold(500).__aenter__())  # waits for an empty budget
        await asyncio.sleep(0)
        assert not big.done()
        big.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await big
        async with budget.hold(40):  # not stuck behind the cancelled one
            assert budget.in_use == 100
    assert budget.in_use == 0
