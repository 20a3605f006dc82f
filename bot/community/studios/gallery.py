"""A studio's gallery: its images numbered in order (an edit names the image it edits) and
the contact sheet, a PNG grid of numbered thumbnails. The captions are the adapter's."""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from bot.tools.contact_sheet import GAP, PLACEHOLDER, numbered_sheet

SHEET_MAX_IMAGES = 30  # a 5×6 grid at most: the gallery lists the rest
SHEET_TILE = 256
SHEET_COLUMNS = 5
# Drawn like a grid's contact sheet (bot/tools/contact_sheet.py), in the same colours.
SHEET_GAP = GAP
SHEET_PLACEHOLDER = PLACEHOLDER


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
    columns = min(SHEET_COLUMNS, max(1, len(tiles)))
    sheet = numbered_sheet(
        [(f"#{number}", data) for number, data in tiles],
        columns=columns,
        cell=(SHEET_TILE, SHEET_TILE),
        margin=SHEET_GAP,
    )
    buffer = io.BytesIO()
    sheet.save(buffer, "PNG", optimize=True)
    return buffer.getvalue()
