"""Reference images as the moderators see them: thumbnails that fit any upload limit."""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass

from PIL import Image

from bot.providers.base import InputImage

# Review images: at most this many pixels a side, and all of them together within this many
# bytes, well under Discord's smallest upload limit (10 MiB) with room for the rest of the post.
REVIEW_IMAGE_SIDE = 1024
REVIEW_UPLOAD_BUDGET = 8 * 1024 * 1024
MAX_REVIEW_IMAGES = 10
_SHOWN_AS_IS = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp"}


@dataclass(frozen=True)
class ReviewImage:
    """A reference image as the moderators see it: small enough to post anywhere."""

    filename: str
    data: bytes


def review_images(inputs: Sequence[InputImage]) -> list[ReviewImage]:
    """Thumbnails of a request's references that together fit REVIEW_UPLOAD_BUDGET. CPU work:
    run it off the event loop."""
    shown = list(inputs[:MAX_REVIEW_IMAGES])
    if not shown:
        return []
    budget = REVIEW_UPLOAD_BUDGET // len(shown)
    return [review_image(index, image, budget) for index, image in enumerate(shown, start=1)]


def review_image(index: int, image: InputImage, budget: int) -> ReviewImage:
    """The image itself when it is small already; else a JPEG of at most REVIEW_IMAGE_SIDE
    pixels a side, made smaller until it fits `budget` bytes."""
    extension = _SHOWN_AS_IS.get(image.content_type)
    small = max(image.width, image.height) <= REVIEW_IMAGE_SIDE
    if extension is not None and small and len(image.data) <= budget:
        return ReviewImage(f"reference-{index}.{extension}", image.data)
    with Image.open(io.BytesIO(image.data)) as opened:
        # Shrunk before anything else (a JPEG is even decoded reduced): a 40 MP reference is
        # never held at full size in RGBA.
        opened.thumbnail((REVIEW_IMAGE_SIDE, REVIEW_IMAGE_SIDE))
        picture = opened.convert("RGBA")
    flat = Image.new("RGB", picture.size, (255, 255, 255))
    flat.paste(picture, mask=picture.getchannel("A"))  # transparency shown on white
    data = b""
    for side in (REVIEW_IMAGE_SIDE, 768, 512, 256, 128):
        thumb = flat.copy()
        thumb.thumbnail((side, side))
        for quality in (85, 70, 50):
            buffer = io.BytesIO()
            thumb.save(buffer, "JPEG", quality=quality, optimize=True)
            data = buffer.getvalue()
            if len(data) <= budget:
                return ReviewImage(f"reference-{index}.jpg", data)
    return ReviewImage(f"reference-{index}.jpg", data)  # 128 px: a few KiB whatever it shows
