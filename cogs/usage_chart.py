"""A PNG bar chart of a server's daily spend, drawn with Pillow (no plotting library needed
for one chart)."""

from __future__ import annotations

import datetime as dt
import io
from collections.abc import Sequence

from PIL import Image, ImageDraw, ImageFont

from bot.ledger.policy import format_credits
from bot.periods import UTC

WIDTH, HEIGHT = 900, 380
MARGIN_LEFT, MARGIN_RIGHT, MARGIN_TOP, MARGIN_BOTTOM = 70, 20, 50, 50
BACKGROUND = (43, 45, 49)  # Discord's dark theme, so the chart sits well in the client
GRID = (70, 73, 79)
TEXT = (219, 222, 225)
BAR = (88, 101, 242)
BAR_TODAY = (87, 242, 135)

Font = ImageFont.ImageFont | ImageFont.FreeTypeFont


def _font(size: int) -> Font:
    # Pillow ships a scalable default font when FreeType is available; otherwise the small
    # bitmap one still renders every label.
    return ImageFont.load_default(size=size)


def _nice_ceiling(value: int) -> int:
    """A round top for the axis (1, 2, 5 × 10ⁿ millicredits), never below 1 credit."""
    value = max(value, 1000)
    magnitude = 1
    while magnitude * 10 <= value:
        magnitude *= 10
    for step in (1, 2, 5, 10):
        if step * magnitude >= value:
            return step * magnitude
    return 10 * magnitude  # pragma: no cover


def daily_spend_png(days: Sequence[tuple[int, int]], title: str) -> bytes:
    """One bar per (day start, millicredits) in `days` (oldest first); the last is today."""
    image = Image.new("RGB", (WIDTH, HEIGHT), BACKGROUND)
    draw = ImageDraw.Draw(image)
    small, large = _font(12), _font(16)
    draw.text((MARGIN_LEFT, 14), title, fill=TEXT, font=large)
    plot_w = WIDTH - MARGIN_LEFT - MARGIN_RIGHT
    plot_h = HEIGHT - MARGIN_TOP - MARGIN_BOTTOM
    bottom = MARGIN_TOP + plot_h
    top_value = _nice_ceiling(max((mc for _, mc in days), default=0))
    for fraction in (0.0, 0.25, 0.5, 0.75, 1.0):
        y = bottom - round(plot_h * fraction)
        draw.line((MARGIN_LEFT, y, WIDTH - MARGIN_RIGHT, y), fill=GRID)
        label = format_credits(round(top_value * fraction))
        draw.text((MARGIN_LEFT - 8, y), label, fill=TEXT, font=small, anchor="rm")
    draw.text((12, MARGIN_TOP - 22), "credits", fill=TEXT, font=small)
    if days:
        slot = plot_w / len(days)
        bar = max(1.0, slot * 0.7)
        label_every = max(1, round(len(days) / 10))
        for index, (day_start, mc) in enumerate(days):
            x0 = MARGIN_LEFT + index * slot + (slot - bar) / 2
            height = round(plot_h * mc / top_value)
            colour = BAR_TODAY if index == len(days) - 1 else BAR
            if height:
                draw.rectangle((x0, bottom - height, x0 + bar, bottom), fill=colour)
            if index % label_every == 0 or index == len(days) - 1:
                day = dt.datetime.fromtimestamp(day_start, UTC)
                draw.text(
                    (x0 + bar / 2, bottom + 8),
                    f"{day:%d %b}",
                    fill=TEXT,
                    font=small,
                    anchor="mt",
                )
    buffer = io.BytesIO()
    image.save(buffer, "PNG", optimize=True)
    return buffer.getvalue()
