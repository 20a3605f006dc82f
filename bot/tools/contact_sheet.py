"""Contact sheets: images side by side in numbered cells, drawn once for both kinds.

- A grid's (several images per prompt): `compose`. Four images make a 2×2 sheet; two or three
  make one row (a 2×2 with an empty cell reads as a missing image). Each cell has the first
  image's shape, at most CELL_SIDE pixels on its long side, and is numbered as the image's
  Edit button is.
- A studio's gallery (bot/community/studios/gallery.py) draws its numbered thumbnails with
  `numbered_sheet`.

An image that cannot be read becomes a grey cell with its number, so the numbering stays
right. CPU work: call these through `asyncio.to_thread`.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

from PIL import Image, ImageDraw, ImageFont

from bot.providers.base import OutputImage

CELL_SIDE = 512
GAP = 8  # pixels between cells, in the background colour
BACKGROUND = (43, 45, 49)  # Discord's dark theme
PLACEHOLDER = (64, 66, 72)
LABEL_TEXT = (255, 255, 255)
LABEL_BACKDROP = (0, 0, 0)
QUALITY = 85
# Results are at most a few megapixels; anything far larger is not ours, so it is skipped.
SOURCE_MAX_PIXELS = 50_000_000


def layout(count: int) -> tuple[int, int]:
    """A grid's (columns, rows) for `count` images: 2×2 for four, one row for two or three."""
    if not 1 <= count <= 4:
        raise ValueError(f"a grid's contact sheet holds 1 to 4 images, not {count}")
    return (2, 2) if count == 4 else (count, 1)


def cell_size(width: int, height: int, side: int = CELL_SIDE) -> tuple[int, int]:
    """The cell for images of this shape: its long side `side` pixels, or the image's own
    size if smaller (a sheet never enlarges)."""
    scale = min(1.0, side / max(width, height))
    return max(1, round(width * scale)), max(1, round(height * scale))


def compose(
    images: Sequence[OutputImage], labels: Sequence[int] | None = None, *, side: int = CELL_SIDE
) -> OutputImage:
    """A grid's sheet of `images` (in order), each cell marked with its label (1, 2, …, by
    default), as a JPEG."""
    labels = list(labels) if labels is not None else list(range(1, len(images) + 1))
    if len(labels) != len(images):
        raise ValueError("one label per image")
    columns, _ = layout(len(images))
    cell = cell_size(images[0].width, images[0].height, side)
    tiles = [(str(label), image.data) for label, image in zip(labels, images, strict=True)]
    sheet = numbered_sheet(tiles, columns=columns, cell=cell, margin=0, font_size=cell[1] // 12)
    buffer = io.BytesIO()
    sheet.save(buffer, "JPEG", quality=QUALITY)
    return OutputImage("image/jpeg", sheet.width, sheet.height, buffer.getvalue())


def numbered_sheet(
    tiles: Sequence[tuple[str, bytes | None]],
    *,
    columns: int,
    cell: tuple[int, int],
    margin: int = GAP,
    font_size: int = 22,
) -> Image.Image:
    """The tiles (label, image bytes or None) in rows of `columns` cells of `cell` pixels,
    `GAP` apart and `margin` from the edges; each image fitted in its cell, its label in the
    cell's top-left corner."""
    rows = max(1, -(-len(tiles) // columns))
    cell_w, cell_h = cell
    sheet = Image.new(
        "RGB",
        (
            2 * margin + columns * cell_w + (columns - 1) * GAP,
            2 * margin + rows * cell_h + (rows - 1) * GAP,
        ),
        BACKGROUND,
    )
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default(size=max(12, font_size))
    for index, (label, data) in enumerate(tiles):
        x = margin + (index % columns) * (cell_w + GAP)
        y = margin + (index // columns) * (cell_h + GAP)
        picture = thumbnail(data, cell)
        if picture is None:
            draw.rectangle((x, y, x + cell_w - 1, y + cell_h - 1), fill=PLACEHOLDER)
        else:
            sheet.paste(
                picture, (x + (cell_w - picture.width) // 2, y + (cell_h - picture.height) // 2)
            )
        left, top, right, bottom = draw.textbbox((0, 0), label, font=font)
        draw.rectangle((x, y, x + right - left + 12, y + bottom - top + 10), fill=LABEL_BACKDROP)
        draw.text((x + 6 - left, y + 5 - top), label, fill=LABEL_TEXT, font=font)
    return sheet


def thumbnail(data: bytes | None, box: tuple[int, int]) -> Image.Image | None:
    """The image fitted into `box` (never enlarged), or None if it cannot be read."""
    if not data:
        return None
    try:
        with Image.open(io.BytesIO(data)) as image:
            if image.width * image.height > SOURCE_MAX_PIXELS:
                return None
            image.draft("RGB", box)  # a JPEG decodes at a fraction of its size: much cheaper
            picture = image.convert("RGB")
    except (OSError, ValueError, Image.DecompressionBombError):
        return None
    picture.thumbnail(box)
    return picture
