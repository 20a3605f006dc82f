"""Canvas arithmetic for zoom out, pan, make square and Hi-res (bot/tools/canvas.py)."""

from __future__ import annotations

import itertools
import random

import pytest

from bot.errors import InvalidRequest
from bot.providers import aiml_options, bfl_options
from bot.tools.canvas import (
    ALREADY_SQUARE_TEXT,
    MIN_SIDE,
    Move,
    OutpaintPlan,
    hires_size,
    plan_outpaint,
)
from bot.variants import MEGAPIXEL

FOUR_MP = 4 * MEGAPIXEL


def test_zoom_out_2x_on_1mp_is_a_2x_canvas_with_the_input_centred() -> None:
    plan = plan_outpaint(1024, 1024, Move.ZOOM_2, FOUR_MP)
    assert (plan.width, plan.height) == (2048, 2048)
    assert (plan.input_width, plan.input_height) == (1024, 1024)
    assert (plan.offset_x, plan.offset_y) == (512, 512)
    assert not plan.scaled


def test_zoom_out_1_5x_centres_the_input() -> None:
    plan = plan_outpaint(1024, 768, Move.ZOOM_1_5, FOUR_MP)
    assert (plan.width, plan.height) == (1536, 1152)
    assert (plan.offset_x, plan.offset_y) == (256, 192)


def test_pan_right_by_half_keeps_the_input_at_the_left_edge() -> None:
    plan = plan_outpaint(1024, 768, Move.RIGHT, FOUR_MP)
    assert (plan.width, plan.height) == (1536, 768)
    assert (plan.offset_x, plan.offset_y) == (0, 0)


def test_each_pan_leaves_the_new_area_on_its_side() -> None:
    left = plan_outpaint(1024, 768, Move.LEFT, FOUR_MP)
    up = plan_outpaint(1024, 768, Move.UP, FOUR_MP)
    down = plan_outpaint(1024, 768, Move.DOWN, FOUR_MP)
    assert (left.width, left.height, left.offset_x, left.offset_y) == (1536, 768, 512, 0)
    assert (up.width, up.height, up.offset_x, up.offset_y) == (1024, 1152, 0, 384)
    assert (down.width, down.height, down.offset_x, down.offset_y) == (1024, 1152, 0, 0)


def test_make_square_is_the_longer_side_squared_and_centred() -> None:
    plan = plan_outpaint(1360, 768, Move.SQUARE, FOUR_MP)
    assert (plan.width, plan.height) == (1360, 1360)
    assert (plan.offset_x, plan.offset_y) == (0, 296)


def test_a_square_image_is_already_square() -> None:
    with pytest.raises(InvalidRequest, match="already square"):
        plan_outpaint(1024, 1024, Move.SQUARE, FOUR_MP)
    assert ALREADY_SQUARE_TEXT == "This image is already square."


def test_over_the_limit_the_whole_composition_is_scaled_down() -> None:
    """A 2 MP image zoomed out 2× would be 8 MP: canvas, input and offsets shrink together."""
    plan = plan_outpaint(1440, 1440, Move.ZOOM_2, FOUR_MP)
    assert plan.pixels <= FOUR_MP
    assert (plan.width, plan.height) == (2048, 2048)
    assert plan.scaled and (plan.input_width, plan.input_height) == (1024, 1024)
    assert (plan.offset_x, plan.offset_y) == (512, 512)


def test_a_server_cap_scales_the_canvas_too() -> None:
    plan = plan_outpaint(1024, 1024, Move.ZOOM_2, MEGAPIXEL)
    assert (plan.width, plan.height) == (1024, 1024)
    assert (plan.input_width, plan.input_height) == (512, 512)
    assert (plan.offset_x, plan.offset_y) == (256, 256)


def _check(plan: OutpaintPlan, width: int, height: int, move: Move, limit: int) -> None:
    assert plan.pixels <= limit
    assert plan.width % 16 == 0 and plan.height % 16 == 0
    assert plan.width >= MIN_SIDE and plan.height >= MIN_SIDE
    # The input fits the canvas entirely (auto_crop stays false).
    assert plan.offset_x >= 0 and plan.offset_x + plan.input_width <= plan.width
    assert plan.offset_y >= 0 and plan.offset_y + plan.input_height <= plan.height
    # It keeps its shape (within a pixel of rounding) and never grows.
    assert plan.input_width <= width and plan.input_height <= height
    assert abs(plan.input_width / plan.input_height - width / height) <= (
        1.5 / min(plan.input_width, plan.input_height) * (width / height) + 1e-9
    )
    # And sits where the move puts it: the new area is on the side asked for.
    free_x, free_y = plan.width - plan.input_width, plan.height - plan.input_height
    if move is Move.RIGHT:
        assert plan.offset_x == 0 and free_x > 0
    if move is Move.LEFT:
        assert plan.offset_x == free_x > 0
    if move is Move.DOWN:
        assert plan.offset_y == 0 and free_y > 0
    if move is Move.UP:
        assert plan.offset_y == free_y > 0
    if move in (Move.ZOOM_1_5, Move.ZOOM_2):
        assert abs(plan.offset_x - free_x / 2) <= 1 and abs(plan.offset_y - free_y / 2) <= 1
        assert free_x > 0 and free_y > 0
    if move is Move.SQUARE:
        assert plan.width == plan.height


def test_every_plan_fits_the_canvas_at_the_right_place_and_never_passes_the_limit() -> None:
    """A property sweep: many sizes and limits, every move."""
    rng = random.Random(24)
    limits = [FOUR_MP, MEGAPIXEL, int(0.25 * MEGAPIXEL), int(2.5 * MEGAPIXEL)]
    sizes = [(64, 64), (1024, 1024), (1360, 768), (768, 1360), (2048, 2048), (4000, 1000)]
    sizes += [(rng.randint(64, 3000), rng.randint(64, 3000)) for _ in range(150)]
    for (width, height), move, limit in itertools.product(sizes, Move, limits):
        try:
            plan = plan_outpaint(width, height, move, limit)
        except InvalidRequest as exc:
            assert (move is Move.SQUARE and width == height) or "cap" in str(exc), (
                width,
                height,
                move,
                limit,
            )
            continue
        _check(plan, width, height, move, limit)


BFL = bfl_options.SIZES
AIML = aiml_options.SIZES


def test_hires_keeps_the_aspect_ratio_at_up_to_4mp() -> None:
    assert hires_size(1024, 1024, BFL, FOUR_MP) == (2048, 2048)
    width, height = hires_size(1360, 768, BFL, FOUR_MP)
    assert width * height <= FOUR_MP and width % 16 == 0 and height % 16 == 0
    assert abs(width / height - 1360 / 768) < 0.02


def test_hires_within_a_server_cap() -> None:
    assert hires_size(512, 512, BFL, MEGAPIXEL) == (1024, 1024)


def test_hires_follows_the_models_own_size_rules() -> None:
    """The AI/ML API's models: sides 512-2048 in multiples of 32."""
    width, height = hires_size(1360, 768, AIML, FOUR_MP)
    assert width == 2048 and height % 32 == 0 and height <= 2048
    AIML.check(width, height)


def test_hires_of_an_image_already_at_the_cap_is_refused() -> None:
    with pytest.raises(InvalidRequest, match="already as large"):
        hires_size(2048, 2048, BFL, FOUR_MP)
    with pytest.raises(InvalidRequest, match="already as large"):
        hires_size(1024, 1024, BFL, MEGAPIXEL)


def test_hires_sizes_never_pass_the_limit() -> None:
    rng = random.Random(4)
    for _ in range(300):
        width, height = rng.randint(32, 2500), rng.randint(32, 2500)
        limit = rng.choice([FOUR_MP, MEGAPIXEL, 2 * MEGAPIXEL])
        rule = rng.choice([BFL, AIML])
        try:
            target = hires_size(width, height, rule, limit)
        except InvalidRequest:
            continue
        assert target[0] * target[1] <= limit
        assert target[0] * target[1] > width * height
        rule.check(*target)  # the model accepts it
