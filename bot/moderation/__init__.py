"""Moderation of prompts, by job: `normalise` (the forms a prompt is compared in),
`patterns` (checking and compiling a moderator's pattern), `terms` (the built-in list and
matching a prompt), `strikes` (refusals, strikes and blocks, with their store). It stands on
`bot.servers` and never imports `bot.community`."""

from bot.moderation.normalise import normalise
from bot.moderation.patterns import MAX_PATTERN_LENGTH, validate_pattern
from bot.moderation.terms import DEFAULT_TERMS, BannedTerm, TermHit, TermMatcher

__all__ = [
    "DEFAULT_TERMS",
    "MAX_PATTERN_LENGTH",
    "BannedTerm",
    "TermHit",
    "TermMatcher",
    "normalise",
    "validate_pattern",
]
