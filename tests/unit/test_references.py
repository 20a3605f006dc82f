"""Reference checks: what is refused before download, after download, and what passes."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from bot.references import (
    ReferenceCandidate,
    ReferenceLimits,
    ReferenceRejected,
    load_references,
    precheck,
    verify_bytes,
)
from bot.variants import MEGAPIXEL, InvalidRequest, get_variant

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


@pytest.mark.parametrize(("kind", "mime"), [("PNG", "image/png"), ("JPEG", "image/jpeg"),
                                             ("WEBP", "image/webp")])
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
        await load_references([ReferenceCandidate("x.png", "image/png", 10, broken)],
                              get_variant("pro"), LIMITS)


async def test_good_references_keep_their_order_and_bytes() -> None:
    first, second = encode("PNG"), encode("JPEG")
    images = await load_references(
        [candidate("1.png", first, "image/png"), candidate("2.jpg", second, "image/jpeg")],
        get_variant("pro"), LIMITS,
    )
    assert [i.data for i in images] == [first, second]
