"""Canvas arithmetic for the result tools: zoom out, pan, make square (BFL outpainting) and
Hi-res (a re-render at up to 4 MP). Pure functions of sizes: no I/O, no Discord.

Outpainting places the input image on a larger canvas (`reference_offset_x/y` is its
top-left corner). Zoom out k× is a kW×kH canvas with the input centred; pan right by half is
1.5W×H with the input at the left edge; make square is max(W,H)² centred
(../shared/reference/bfl-tools.md). When that canvas is over the megapixel limit, the whole
composition is scaled down: canvas, input and offsets alike, so a 2× zoom stays a 2× zoom.
Canvas sides are multiples of 16 (BFL's rule for its image routes); the input is scaled by
the same factor and never extends past the canvas (`auto_crop` stays false).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum

from bot.errors import InvalidRequest
from bot.variants import SizeRule

SIDE_MULTIPLE = 16
MIN_SIDE = 64  # BFL's smallest width or height
ALREADY_SQUARE_TEXT = "This image is already square."
TOO_SMALL_TEXT = "This server's megapixel cap is too small for that canvas."
ALREADY_LARGE_TEXT = "This image is already as large as Hi-res can make it here ({width}×{height})."


class Move(StrEnum):
    """What an outpainting button asks for."""

    ZOOM_1_5 = "zoom15"
    ZOOM_2 = "zoom2"
    SQUARE = "square"
    LEFT = "left"
    RIGHT = "right"
    UP = "up"
    DOWN = "down"


# (canvas width factor, canvas height factor, where the input sits along the free space:
# 0 = at the left/top edge, 0.5 = centred, 1 = at the right/bottom edge). Panning right
# shows more on the right, so the input keeps the left edge.
_PAN = 1.5
_LAYOUT: dict[Move, tuple[float, float, float, float]] = {
    Move.ZOOM_1_5: (1.5, 1.5, 0.5, 0.5),
    Move.ZOOM_2: (2.0, 2.0, 0.5, 0.5),
    Move.LEFT: (_PAN, 1.0, 1.0, 0.5),
    Move.RIGHT: (_PAN, 1.0, 0.0, 0.5),
    Move.UP: (1.0, _PAN, 0.5, 1.0),
    Move.DOWN: (1.0, _PAN, 0.5, 0.0),
}


@dataclass(frozen=True)
class OutpaintPlan:
    """The canvas, the size the input is sent at, and where it sits (top-left corner)."""

    source_width: int
    source_height: int
    width: int
    height: int
    input_width: int
    input_height: int
    offset_x: int
    offset_y: int

    @property
    def pixels(self) -> int:
        return self.width * self.height

    @property
    def scaled(self) -> bool:
        """Whether the input must be resized before it is sent."""
        return (self.input_width, self.input_height) != (self.source_width, self.source_height)


def _round_up(value: float) -> int:
    return max(MIN_SIDE, math.ceil(value / SIDE_MULTIPLE - 1e-9) * SIDE_MULTIPLE)


def _round_down(value: float) -> int:
    return max(MIN_SIDE, math.floor(value / SIDE_MULTIPLE + 1e-9) * SIDE_MULTIPLE)


def plan_outpaint(width: int, height: int, move: Move, max_pixels: int) -> OutpaintPlan:
    """The canvas for `move` on a `width`×`height` image, within `max_pixels`. Raises
    InvalidRequest for a square image asked to become square, or a cap too small."""
    if width < 1 or height < 1:
        raise InvalidRequest("I can't tell this image's size.")
    if move is Move.SQUARE:
        if width == height:
            raise InvalidRequest(ALREADY_SQUARE_TEXT)
        side = max(width, height)
        factor_x, factor_y, anchor_x, anchor_y = side / width, side / height, 0.5, 0.5
    else:
        factor_x, factor_y, anchor_x, anchor_y = _LAYOUT[move]
    ideal_w, ideal_h = width * factor_x, height * factor_y
    scale = min(1.0, math.sqrt(max_pixels / (ideal_w * ideal_h)))
    canvas_w, canvas_h = _round_up(ideal_w * scale), _round_up(ideal_h * scale)
    if canvas_w * canvas_h > max_pixels:
        canvas_w, canvas_h = _round_down(ideal_w * scale), _round_down(ideal_h * scale)
    if canvas_w * canvas_h > max_pixels:
        raise InvalidRequest(TOO_SMALL_TEXT)
    # The input shrinks with the canvas (and a little more if rounding the canvas down left
    # it too small on an axis the input spans).
    input_scale = min(scale, canvas_w / width, canvas_h / height)
    input_w = max(1, min(canvas_w, math.floor(width * input_scale + 1e-9)))
    input_h = max(1, min(canvas_h, math.floor(height * input_scale + 1e-9)))
    if move is Move.SQUARE and canvas_w == canvas_h and (input_w, input_h) == (canvas_w, canvas_h):
        raise InvalidRequest(ALREADY_SQUARE_TEXT)
    return OutpaintPlan(
        source_width=width,
        source_height=height,
        width=canvas_w,
        height=canvas_h,
        input_width=input_w,
        input_height=input_h,
        offset_x=math.floor((canvas_w - input_w) * anchor_x),
        offset_y=math.floor((canvas_h - input_h) * anchor_y),
    )


def hires_size(width: int, height: int, sizes: SizeRule, max_pixels: int) -> tuple[int, int]:
    """The largest size the model's `sizes` allow within `max_pixels`, with the image's
    aspect ratio. Raises InvalidRequest when that is no larger than the image already is."""
    if width < 1 or height < 1:
        raise InvalidRequest("I can't tell this image's size.")
    limit = min(max_pixels, sizes.max_pixels)
    step, lowest = sizes.multiple, sizes.min_side
    scale = math.sqrt(limit / (width * height))
    if sizes.max_side is not None:
        scale = min(scale, sizes.max_side / width, sizes.max_side / height)

    def side(value: float) -> int:
        return max(lowest, math.floor(value / step + 1e-9) * step)

    target_w, target_h = side(width * scale), side(height * scale)
    # The smallest side allowed can push a very long image over: give up the long side.
    while target_w * target_h > limit and max(target_w, target_h) - step >= lowest:
        if target_w >= target_h:
            target_w -= step
        else:
            target_h -= step
    if target_w * target_h <= width * height or target_w * target_h > limit:
        raise InvalidRequest(ALREADY_LARGE_TEXT.format(width=width, height=height))
    return target_w, target_h
