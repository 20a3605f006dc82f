"""Moderation of prompts: per-server banned terms (see `bot.moderation.terms`)."""

from bot.moderation.terms import (
    DEFAULT_TERMS,
    MAX_PATTERN_LENGTH,
    BannedTerm,
    TermHit,
    TermMatcher,
    normalise,
    validate_pattern,
)

__all__ = [
    "DEFAULT_TERMS",
    "MAX_PATTERN_LENGTH",
    "BannedTerm",
    "TermHit",
    "TermMatcher",
    "normalise",
    "validate_pattern",
]
