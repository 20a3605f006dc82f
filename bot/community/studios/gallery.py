"""A studio's gallery: its images numbered in order (an edit names the image it edits) and
the contact sheet, a PNG grid of numbered thumbnails. The captions are the adapter's."""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from PIL import Image, ImageDraw, ImageFont

SHEET_MAX_IMAGES = 30  # a 5×6 grid at most: the gallery lists the rest
SHEET_TILE = 256
SHEET_COLUMNS = 5
SHEET_GAP = 8
SHEET_BACKGROUND = (43, 45, 49)  # Discord's dark theme
SHEET_PLACEHOLDER = (64, 66, 72)
SHEET_TEXT = (255, 255, 255)
SHEET_LABEL = (0, 0, 0)
# Results are at most a few megapixels; anything far larger is not ours, so it is skipped.
SHEET_SOURCE_MAX_PIXELS = 50_000_000


@dataclass(frozen=True)
class ThreadImage:
    """A result delivered in a studio's thread, as the job store has it."""

    id: str  # the job's
    user_id: int
    prompt: str
    result_message_id: int
    parent_job_id: str | None


@dataclass(frozen=True)
class GalleryItem:
    number: int
    job_id: str
    user_id: int
    prompt: str  # the member's words, without the theme
    message_id: int
    edit_of: int | None  # the number of the image it edits, when that is in the gallery


def gallery_items(
    images: Sequence[ThreadImage], own_words: Callable[[str], str]
) -> list[GalleryItem]:
    """The thread's images numbered oldest first; `own_words` takes the theme off a prompt."""
    numbers: dict[str, int] = {}
    items = []
    for number, image in enumerate(images, start=1):
        numbers[image.id] = number
        items.append(
            GalleryItem(
                number=number,
                job_id=image.id,
                user_id=image.user_id,
                prompt=own_words(image.prompt),
                message_id=image.result_message_id,
                edit_of=numbers.get(image.parent_job_id or ""),
            )
        )
    return items


def contact_sheet(tiles: Sequence[tuple[int, bytes | None]]) -> bytes:
    """A PNG grid of numbered thumbnails (the numbers of the gallery's lines); an image that
    cannot be read becomes a grey tile with its number, so the numbering stays right."""
    count = len(tiles)
    columns = min(SHEET_COLUMNS, max(1, count))
    rows = max(1, math.ceil(count / columns))
    step = SHEET_TILE + SHEET_GAP
    sheet = Image.new(
        "RGB", (SHEET_GAP + columns * step, SHEET_GAP + rows * step), SHEET_BACKGROUND
    )
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default(size=22)
    for index, (number, data) in enumerate(tiles):
        x = SHEET_GAP + (index % columns) * step
        y = SHEET_GAP + (index // columns) * step
        thumb = _thumbnail(data)
        if thumb is None:
            draw.rectangle((x, y, x + SHEET_TILE - 1, y + SHEET_TILE - 1), fill=SHEET_PLACEHOLDER)
        else:
            sheet.paste(
                thumb, (x + (SHEET_TILE - thumb.width) // 2, y + (SHEET_TILE - thumb.height) // 2)
            )
        label = f"#{number}"
        left, top, right, bottom = draw.textbbox((0, 0), label, font=font)
        draw.rectangle((x, y, x + right - left + 12, y + bottom - top + 10), fill=SHEET_LABEL)
        draw.text((x + 6 - left, y + 5 - top), label, fill=SHEET_TEXT, font=font)
    buffer = io.BytesIO()
    sheet.save(buffer, "PNG", optimize=True)
    return buffer.getvalue()


def _thumbnail(data: bytes | None) -> Image.Image | None:
    if not data:
        return None
    try:
        with Image.open(io.BytesIO(data)) as image:
            if image.width * image.height > SHEET_SOURCE_MAX_PIXELS:
                return None
            image.draft("RGB", (SHEET_TILE, SHEET_TILE))  # JPEG: decode at a fraction of size
            thumb = image.convert("RGB")
    except (OSError, ValueError, Image.DecompressionBombError):
        return None
    thumb.thumbnail((SHEET_TILE, SHEET_TILE))
    return thumb
