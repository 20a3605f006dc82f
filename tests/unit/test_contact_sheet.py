"""The contact sheet of a grid: its layout, each image in its numbered cell, and its size."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from bot.providers.base import OutputImage
from bot.tools.contact_sheet import BACKGROUND, CELL_SIDE, GAP, PLACEHOLDER, compose, layout

RED, GREEN, BLUE, YELLOW = (220, 20, 20), (20, 200, 20), (20, 20, 220), (230, 230, 20)


def solid(colour: tuple[int, int, int], size: tuple[int, int] = (1024, 1024)) -> OutputImage:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, "PNG")
    return OutputImage("image/png", size[0], size[1], buffer.getvalue())


def decoded(sheet: OutputImage) -> Image.Image:
    picture = Image.open(io.BytesIO(sheet.data))
    picture.load()
    return picture.convert("RGB")


def close(pixel: tuple[int, ...], colour: tuple[int, int, int], tolerance: int = 24) -> bool:
    return all(abs(a - b) <= tolerance for a, b in zip(pixel, colour, strict=True))


@pytest.mark.parametrize(
    ("count", "expected"), [(1, (1, 1)), (2, (2, 1)), (3, (3, 1)), (4, (2, 2))]
)
def test_four_make_a_two_by_two_and_fewer_make_one_row(
    count: int, expected: tuple[int, int]
) -> None:
    assert layout(count) == expected


@pytest.mark.parametrize("count", [0, 5])
def test_a_sheet_holds_one_to_four_images(count: int) -> None:
    with pytest.raises(ValueError):
        layout(count)


def test_four_images_each_fill_their_own_cell_in_order() -> None:
    sheet = compose([solid(RED), solid(GREEN), solid(BLUE), solid(YELLOW)])
    picture = decoded(sheet)
    side = CELL_SIDE
    assert (sheet.width, sheet.height) == (2 * side + GAP, 2 * side + GAP) == picture.size
    assert sheet.content_type == "image/jpeg"
    # The middle of each cell shows its image (the number sits in the top-left corner).
    centres = [(side // 2, side // 2), (side + GAP + side // 2, side // 2)]
    centres += [(x, side + GAP + side // 2) for x, _ in centres]
    for centre, colour in zip(centres, (RED, GREEN, BLUE, YELLOW), strict=True):
        assert close(picture.getpixel(centre), colour)
    assert close(picture.getpixel((side + GAP // 2, side // 2)), BACKGROUND)  # the gap


def test_each_cell_is_numbered_with_its_label() -> None:
    """The label's corner differs from the plain image: something is drawn there."""
    picture = decoded(compose([solid(RED), solid(GREEN)], labels=[1, 3]))
    corner = CELL_SIDE // 6
    pixels = [picture.getpixel((x, y)) for x in range(corner) for y in range(corner)]
    assert any(not close(pixel, RED) for pixel in pixels)
    with pytest.raises(ValueError):
        compose([solid(RED), solid(GREEN)], labels=[1])


def test_a_wide_image_keeps_its_shape_in_a_cell_of_its_shape() -> None:
    wide = [solid(RED, (1536, 768)), solid(GREEN, (1536, 768)), solid(BLUE, (1536, 768))]
    sheet = compose(wide)
    assert (sheet.width, sheet.height) == (3 * CELL_SIDE + 2 * GAP, CELL_SIDE // 2)


def test_a_large_image_makes_a_small_sheet_and_a_small_one_is_not_enlarged() -> None:
    big = compose([solid(RED, (2048, 2048)) for _ in range(4)])
    assert max(big.width, big.height) == 2 * CELL_SIDE + GAP
    assert len(big.data) < 200_000
    small = compose([solid(RED, (32, 32)), solid(GREEN, (32, 32))])
    assert (small.width, small.height) == (2 * 32 + GAP, 32)


def test_an_unreadable_image_is_a_grey_numbered_cell() -> None:
    broken = OutputImage("image/png", 1024, 1024, b"not an image")
    picture = decoded(compose([solid(RED), broken]))
    assert close(picture.getpixel((CELL_SIDE + GAP + CELL_SIDE // 2, CELL_SIDE // 2)), PLACEHOLDER)
