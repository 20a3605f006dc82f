"""Studios: shared creation threads, like AI Horde's parties.

A member opens one from a text channel with `/studio start`; the bot makes a public thread
where every prompt gets the studio's theme appended, must contain its required words, and
draws on the studio's own budget (an extra cap: the server's allowances keep applying through
the ledger). Any member's reply to an image there edits it, so the thread grows one shared
chain of images. A studio ends when its time is up, or early when its starter or a moderator
ends it: the bot posts a gallery (who made what, with a contact sheet) in the thread and in its
channel, then archives and locks the thread.

- `rules`: what a studio allows (limits, theme and required words, budget, who may manage it,
  which replies are requests) and the checks on a `/studio start`; plain values.
- `store`: the studios table (SQLite), returning `Studio`s.
- `gallery`: the gallery's numbering and the contact sheet image.
- `service`: `Studios`, the service the bot holds: the rules applied to requests, the
  lifecycle, the ending and its sweep, and the `StudioView` port the cog implements
  (cogs/studio.py creates threads and renders every text posted in them).
"""

from bot.community.studios.gallery import (
    SHEET_GAP,
    SHEET_MAX_IMAGES,
    SHEET_PLACEHOLDER,
    SHEET_TILE,
    GalleryItem,
    contact_sheet,
)
from bot.community.studios.rules import (
    ALREADY_ENDED_TEXT,
    ALREADY_LOCKED_TEXT,
    DEFAULT_HOURS,
    ENDED_TEXT,
    LOCKED_TEXT,
    MAX_BUDGET_CREDITS,
    MAX_HOURS,
    MAX_THEME_CHARS,
    MIN_HOURS,
    NOT_A_STUDIO_TEXT,
    NOT_ALLOWED_TEXT,
    RequiredWordsMissing,
    Studio,
    StudioBudgetExceeded,
    StudioPlan,
    StudioState,
    ThemedPromptTooLong,
    budget_text,
    make_plan,
    parse_words,
    words_text,
)
from bot.community.studios.service import Studios, StudioView

__all__ = [
    "ALREADY_ENDED_TEXT",
    "ALREADY_LOCKED_TEXT",
    "DEFAULT_HOURS",
    "ENDED_TEXT",
    "LOCKED_TEXT",
    "MAX_BUDGET_CREDITS",
    "MAX_HOURS",
    "MAX_THEME_CHARS",
    "MIN_HOURS",
    "NOT_ALLOWED_TEXT",
    "NOT_A_STUDIO_TEXT",
    "SHEET_GAP",
    "SHEET_MAX_IMAGES",
    "SHEET_PLACEHOLDER",
    "SHEET_TILE",
    "GalleryItem",
    "RequiredWordsMissing",
    "Studio",
    "StudioBudgetExceeded",
    "StudioPlan",
    "StudioState",
    "StudioView",
    "Studios",
    "ThemedPromptTooLong",
    "budget_text",
    "contact_sheet",
    "make_plan",
    "parse_words",
    "words_text",
]
