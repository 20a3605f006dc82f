"""The contact sheet of a grid (several images per prompt): the images side by side, each
numbered as its Edit button is, so a member sees the set at a glance and picks one.

Four images make a 2×2 sheet; two or three make one row (a 2×2 with an empty cell reads as a
missing image). Each cell is the first image's shape, at most CELL_SIDE pixels on its long
side; an image of another shape is fitted inside its cell. CPU work: call `compose` through
`asyncio.to_thread`.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

from PIL import Image, ImageDraw, ImageFont

from bot.providers.base import OutputImage

CELL_SIDE = 512
GAP = 8  # pixels between cells, in the background colour
BACKGROUND = (24, 25, 28)  # close to Discord's dark theme
LABEL_COLOUR = (255, 255, 255)
LABEL_BACKDROP = (0, 0, 0, 160)
QUALITY = 85


def layout(count: int) -> tuple[int, int]:
    """(columns, rows) for `count` images: 2×2 for four, one row for two or three."""
    if not 1 <= count <= 4:
        raise ValueError(f"a contact sheet holds 1 to 4 images, not {count}")
    return (2, 2) if count == 4 else (count, 1)


def cell_size(width: int, height: int, side: int = CELL_SIDE) -> tuple[int, int]:
    """The cell for images of this shape: its long side `side` pixels."""
    scale = side / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def compose(
    images: Sequence[OutputImage], labels: Sequence[int] | None = None, *, side: int = CELL_SIDE
) -> OutputImage:
    """The sheet of `images` (in order), each cell marked with its label (1, 2, …, by
    default), as a JPEG."""
    labels = list(labels) if labels is not None else list(range(1, len(images) + 1))
    if len(labels) != len(images):
        raise ValueError("one label per image")
    columns, rows = layout(len(images))
    cell_w, cell_h = cell_size(images[0].width, images[0].height, side)
    sheet = Image.new(
        "RGB",
        (columns * cell_w + (columns - 1) * GAP, rows * cell_h + (rows - 1) * GAP),
        BACKGROUND,
    )
    font = ImageFont.load_default(size=max(12, cell_h // 12))
    for position, (image, label) in enumerate(zip(images, labels, strict=True)):
        x = (position % columns) * (cell_w + GAP)
        y = (position // columns) * (cell_h + GAP)
        picture = _fitted(image.data, (cell_w, cell_h))
        sheet.paste(
            picture, (x + (cell_w - picture.width) // 2, y + (cell_h - picture.height) // 2)
        )
        _label(sheet, font, str(label), x, y)
    buffer = io.BytesIO()
    sheet.save(buffer, "JPEG", quality=QUALITY)
    return OutputImage("image/jpeg", sheet.width, sheet.height, buffer.getvalue())


def _fitted(data: bytes, box: tuple[int, int]) -> Image.Image:
    with Image.open(io.BytesIO(data)) as source:
        source.draft("RGB", box)  # a JPEG decodes at a fraction of its size: much cheaper
        picture = source.convert("RGB")
    picture.thumbnail(box)  # never enlarged; fitted keeping its shape
    if picture.width < box[0] and picture.height < box[1]:
        scale = min(box[0] / picture.width, box[1] / picture.height)
        picture = picture.resize((round(picture.width * scale), round(picture.height * scale)))
    return picture


def _label(
    sheet: Image.Image,
    font: ImageFont.ImageFont | ImageFont.FreeTypeFont,
    text: str,
    x: int,
    y: int,
) -> None:
    draw = ImageDraw.Draw(sheet, "RGBA")
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    pad = max(4, (bottom - top) // 3)
    box = (x + pad, y + pad, x + pad * 3 + right - left, y + pad * 3 + bottom - top)
    draw.rounded_rectangle(box, radius=pad, fill=LABEL_BACKDROP)
    draw.text((x + pad * 2 - left, y + pad * 2 - top), text, fill=LABEL_COLOUR, font=font)
