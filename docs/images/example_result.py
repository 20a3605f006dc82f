"""Draws docs/images/example-result.png: how a result looks in Discord, for the README.

An illustration: the picture inside the card is a drawn gradient, not a FLUX image.
Regenerate: python docs/images/example_result.py
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

WIDTH, HEIGHT = 720, 640
BACKGROUND = (49, 51, 56)  # Discord's dark theme
EMBED = (43, 45, 49)
ACCENT = (88, 101, 242)
TEXT = (219, 222, 225)
MUTED = (148, 155, 164)
BUTTON = (78, 80, 88)


def font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def scene(width: int, height: int) -> Image.Image:
    """A lighthouse on a cliff at dusk, in flat shapes over a sky gradient."""
    sky = Image.new("RGB", (width, height))
    top, bottom = (38, 40, 92), (246, 156, 92)
    for y in range(height):
        t = y / (height - 1)
        colour = tuple(round(a + (b - a) * t) for a, b in zip(top, bottom, strict=True))
        ImageDraw.Draw(sky).line([(0, y), (width, y)], fill=colour)
    draw = ImageDraw.Draw(sky)
    draw.ellipse((width * 0.62, height * 0.52, width * 0.78, height * 0.68), fill=(255, 214, 150))
    sea_top = int(height * 0.72)
    draw.rectangle((0, sea_top, width, height), fill=(34, 52, 86))
    for y in range(sea_top + 8, height, 14):
        draw.line([(width * 0.55, y), (width * 0.85, y)], fill=(230, 160, 110), width=2)
    cliff = [
        (0, height),
        (0, height * 0.55),
        (width * 0.18, height * 0.5),
        (width * 0.36, height * 0.6),
        (width * 0.46, height),
    ]
    draw.polygon(cliff, fill=(24, 24, 38))
    base_x, base_y = width * 0.17, height * 0.5
    draw.polygon(
        [
            (base_x - 14, base_y),
            (base_x + 14, base_y),
            (base_x + 8, base_y - 110),
            (base_x - 8, base_y - 110),
        ],
        fill=(236, 232, 224),
    )
    for stripe in (30, 70):
        draw.rectangle(
            (base_x - 12, base_y - stripe - 12, base_x + 12, base_y - stripe), fill=(196, 64, 60)
        )
    draw.rectangle((base_x - 10, base_y - 128, base_x + 10, base_y - 110), fill=(255, 236, 160))
    draw.polygon(
        [(base_x + 10, base_y - 122), (width * 0.6, base_y - 150), (width * 0.6, base_y - 95)],
        fill=(255, 236, 170),
    )
    return sky


def main() -> None:
    card = Image.new("RGB", (WIDTH, HEIGHT), BACKGROUND)
    draw = ImageDraw.Draw(card)
    draw.ellipse((16, 16, 56, 56), fill=ACCENT)
    draw.text((36, 36), "F", font=font(22), fill=(255, 255, 255), anchor="mm")
    draw.text((70, 18), "Fluxcord", font=font(17), fill=(255, 255, 255))
    draw.rounded_rectangle((152, 20, 188, 36), radius=3, fill=ACCENT)
    draw.text((170, 28), "APP", font=font(11), fill=(255, 255, 255), anchor="mm")
    draw.text((198, 20), "Today at 21:14", font=font(12), fill=MUTED)
    draw.text((70, 42), "@alice", font=font(15), fill=TEXT)

    left, top, right = 70, 68, WIDTH - 24
    draw.rounded_rectangle((left, top, right, top + 470), radius=4, fill=EMBED)
    draw.rectangle((left, top, left + 4, top + 470), fill=ACCENT)
    draw.text(
        (left + 16, top + 12),
        "a lighthouse on a cliff at dusk, oil painting",
        font=font(15),
        fill=TEXT,
    )
    fields = (
        ("Model", "FLUX.2 [pro]"),
        ("Size", "1024x768"),
        ("Seed", "421337"),
        ("Cost", "3 credits"),
        ("Requested by", "@alice"),
    )
    for index, (name, value) in enumerate(fields):  # inline fields: three to a row
        x, y = left + 16 + (index % 3) * 170, top + 40 + (index // 3) * 44
        draw.text((x, y), name, font=font(13), fill=(255, 255, 255))
        draw.text((x, y + 18), value, font=font(13), fill=TEXT)
    card.paste(scene(400, 300), (left + 16, top + 134))
    draw.text((left + 16, top + 446), "Job 3f9c2a71", font=font(11), fill=MUTED)

    x = left
    for label in ("Reroll", "Edit", "Remix", "History", "Delete"):
        text_width = draw.textlength(label, font=font(14))
        colour = (218, 55, 60) if label == "Delete" else BUTTON
        draw.rounded_rectangle((x, 552, x + text_width + 32, 586), radius=4, fill=colour)
        draw.text((x + 16, 569), label, font=font(14), fill=(255, 255, 255), anchor="lm")
        x += int(text_width) + 42
    draw.text(
        (left, 604),
        "An example: the picture is a drawn illustration, not a FLUX image.",
        font=font(12),
        fill=MUTED,
    )
    card.save(Path(__file__).with_name("example-result.png"), optimize=True)


if __name__ == "__main__":
    main()
