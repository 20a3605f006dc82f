"""Fitting results into an upload limit: untouched when they fit, else reduced just enough."""

from __future__ import annotations

import hashlib
import io

import pytest
from PIL import Image

from bot.image_fit import CannotFit, fit_images
from bot.providers.base import OutputImage


def noise_png(side: int, seed: int = 0, *, alpha: bool = False) -> OutputImage:
    mode = "RGBA" if alpha else "RGB"
    raw = hashlib.shake_256(f"{seed}".encode()).digest(side * side * len(mode))
    buffer = io.BytesIO()
    Image.frombytes(mode, (side, side), raw).save(buffer, "PNG")
    return OutputImage("image/png", side, side, buffer.getvalue())


def decoded(image: OutputImage) -> Image.Image:
    picture = Image.open(io.BytesIO(image.data))
    picture.load()
    return picture


def test_images_that_fit_are_returned_byte_for_byte() -> None:
    images = [noise_png(64, n) for n in range(3)]
    assert fit_images(images, sum(len(i.data) for i in images)) == images


def test_four_large_images_are_reencoded_to_fit_together_at_full_size() -> None:
    images = [noise_png(512, n) for n in range(4)]  # ~770 KB each: incompressible noise
    budget = 2 * 1024 * 1024
    fitted = fit_images(images, budget)
    assert sum(len(i.data) for i in fitted) <= budget
    for image in fitted:
        picture = decoded(image)
        assert picture.format == "JPEG" and image.content_type == "image/jpeg"
        assert picture.size == (512, 512) == (image.width, image.height)


def test_an_image_is_downscaled_when_reencoding_is_not_enough() -> None:
    [image] = fit_images([noise_png(512)], 60_000)
    assert len(image.data) <= 60_000
    assert decoded(image).size == (image.width, image.height)
    assert image.width < 512 and image.width == image.height


def test_small_images_keep_their_bytes_and_only_the_large_one_is_reduced() -> None:
    small, large = noise_png(32, 1), noise_png(512, 2)
    fitted = fit_images([small, large], 300_000)
    assert fitted[0] is small
    assert fitted[1].content_type == "image/jpeg" and len(fitted[1].data) <= 300_000 - len(
        small.data
    )


def test_transparency_is_kept_as_webp() -> None:
    [image] = fit_images([noise_png(256, alpha=True)], 150_000)
    picture = decoded(image)
    assert picture.format == "WEBP" and picture.mode == "RGBA"


def test_a_budget_nothing_fits_in_is_refused() -> None:
    with pytest.raises(CannotFit):
        fit_images([noise_png(256)], 100)
