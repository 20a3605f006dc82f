"""Plain-text helpers shared by the core and the adapters, and Discord's text limits.

Nothing here knows Discord's API; it only knows how long Discord lets a text be and how a
link to a message is written. Markdown escaping that needs discord.py lives in
`cogs/render.py` (`inert`).
"""

from __future__ import annotations

# Discord's limits, as documented.
MESSAGE_LIMIT = 2000  # characters in a message's content
EMBED_DESCRIPTION_LIMIT = 4096
EMBED_FIELD_LIMIT = 1024
MODAL_VALUE_LIMIT = 4000


def truncate(text: str, limit: int) -> str:
    """`text` cut to at most `limit` characters, ending in an ellipsis when it was cut."""
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def message_text(text: str) -> str:
    """Text that fits one Discord message."""
    return truncate(text, MESSAGE_LIMIT)


def one_line(text: str) -> str:
    """Any run of whitespace (newlines too) as one space."""
    return " ".join(text.split())


def plural(count: int, word: str) -> str:
    """ "1 image", "3 images"."""
    return f"{count} {word}{'' if count == 1 else 's'}"


def code_excerpt(text: str, limit: int) -> str:
    """A member's text as a code span: shortened, and backticks can't break out of it."""
    shortened = truncate(text.replace("`", "'"), limit)
    return f"`{shortened}`"


def message_link(guild_id: int | None, channel_id: int, message_id: int) -> str:
    return f"https://discord.com/channels/{guild_id or '@me'}/{channel_id}/{message_id}"
