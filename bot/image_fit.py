"""Fit result images into a destination's upload limit.

Discord refuses a message whose files together exceed the server's upload limit (10 MiB
unless the server is boosted), while a provider may return up to 25 MiB per image, and a
multi-image result adds up. Images that fit are left untouched: only what is over its share
is re-encoded (JPEG, or WebP where there is transparency), then downscaled step by step.
CPU-heavy: call it through `asyncio.to_thread`.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

from PIL import Image

from bot.providers.base import OutputImage

# Encoder qualities tried at full size before the image is made smaller.
QUALITIES = (90, 82, 74)
SHRINK_STEP = 0.8  # each downscale keeps 80% of the width and height
MIN_SIDE = 64  # below this an image is not worth showing


class CannotFit(ValueError):
    """Even reduced, the images do not fit the limit."""


def fits(images: Sequence[OutputImage], budget: int) -> bool:
    return sum(len(image.data) for image in images) <= budget


def fit_images(images: Sequence[OutputImage], budget: int) -> list[OutputImage]:
    """The images, each over its share of `budget` bytes re-encoded or downscaled so that
    together they fit. Raises CannotFit."""
    if fits(images, budget):
        return list(images)
    if not images:
        return []
    kept = [image for image in images if len(image.data) <= budget // len(images)]
    over = [image for image in images if len(image.data) > budget // len(images)]
    # Images already under their share keep their bytes; the rest share what is left.
    share = (budget - sum(len(image.data) for image in kept)) // len(over)
    fitted = {id(image): _shrink(image, share) for image in over}
    return [fitted.get(id(image), image) for image in images]


def _shrink(image: OutputImage, budget: int) -> OutputImage:
    with Image.open(io.BytesIO(image.data)) as source:
        source.load()
        has_alpha = source.mode in ("RGBA", "LA") or "transparency" in source.info
        picture = source.convert("RGBA" if has_alpha else "RGB")
    kind, content_type = ("WEBP", "image/webp") if has_alpha else ("JPEG", "image/jpeg")
    width, height = picture.size
    while min(width, height) >= MIN_SIDE:
        resized = picture if (width, height) == picture.size else picture.resize((width, height))
        for quality in QUALITIES:
            buffer = io.BytesIO()
            resized.save(buffer, kind, quality=quality)
            if buffer.tell() <= budget:
                return OutputImage(content_type, width, height, buffer.getvalue())
        width, height = int(width * SHRINK_STEP), int(height * SHRINK_STEP)
    raise CannotFit(f"cannot fit an image into {budget} bytes")
