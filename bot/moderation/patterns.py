"""Moderators' patterns, checked and compiled: a banned term is refused with a message the
moderator can act on before it is stored, and every pattern a moderator wrote is compiled
for RE2, whose matching time grows linearly with the prompt whatever the pattern.

Only the built-in expressions (ours, which need lookaround) are compiled with Python's
engine; `bot.moderation.terms` matches prompts with what is compiled here.
"""

from __future__ import annotations

import re
from typing import Any

import re2  # google-re2: linear-time matching, whatever the moderator writes

from bot.errors import InvalidPattern
from bot.moderation.normalise import normalise

MAX_PATTERN_LENGTH = 200
# RE2's memory for one compiled expression (program and DFA cache). A moderator's 200
# characters fit easily; when the DFA cache fills, RE2 falls back to a slower engine that is
# still linear in the prompt's length.
_RE2_MAX_MEM = 4 << 20
_PROBES = ("", "a", "a b", "the quick brown fox 123")


def _re2_options(*, case_sensitive: bool) -> Any:
    options = re2.Options()
    options.case_sensitive = case_sensitive
    options.log_errors = False  # RE2 would print its own copy of every refusal to stderr
    options.max_mem = _RE2_MAX_MEM
    return options


_MODERATOR_OPTIONS = _re2_options(case_sensitive=False)
_PLAIN_OPTIONS = _re2_options(case_sensitive=True)  # prompts and plain terms are casefolded


def _re2_refusal(detail: str) -> str:
    """The moderator's explanation of why RE2 will not take a pattern Python accepts."""
    if any(operator in detail for operator in ("(?=", "(?!", "(?<")):
        what = "lookaround, such as (?=…), (?!…), (?<=…) or (?<!…)"
    elif re.search(r"\\[1-9]|\(\?P$", detail):
        what = r"a backreference, such as \1 or (?P=name)"
    else:
        what = f"something the matching engine doesn't support ({detail})"
    return (
        f"That regular expression uses {what}. Banned terms are matched with RE2, an engine "
        "that always finishes quickly whatever the pattern, so backreferences, lookaround, "
        "possessive or atomic groups and \\Z (write \\z) can't be used. Rewrite it without them."
    )


def _compile_moderator_regex(cleaned: str, *, pattern: str) -> Any:
    """`cleaned` compiled for linear-time matching, or `InvalidPattern` saying why not."""
    try:
        return re2.compile(cleaned, _MODERATOR_OPTIONS)
    except re2.error as exc:
        detail = exc.args[0] if exc.args else ""
        if isinstance(detail, bytes):
            detail = detail.decode("utf-8", "replace")
        raise InvalidPattern(_re2_refusal(str(detail)), pattern=pattern) from exc


def compile_regex_term(cleaned: str, *, pattern: str, builtin: bool) -> Any:
    """A regex term, compiled to be searched case-insensitively: with RE2 when a moderator
    wrote it (else `InvalidPattern`), with Python's engine when it is one of ours."""
    if builtin:
        return re.compile(cleaned, re.IGNORECASE)
    return _compile_moderator_regex(cleaned, pattern=pattern)


def compile_plain_terms(regex: str) -> Any:
    """The one expression all plain terms share (built from normalised terms, so written
    in lower case: matched case-sensitively against normalised prompts)."""
    return re2.compile(regex, _PLAIN_OPTIONS)


def validate_pattern(pattern: str, *, is_regex: bool, builtin: bool = False) -> str:
    """The cleaned pattern (trimmed; a plain term's inner spacing collapsed), or raise
    `InvalidPattern` with a message for the moderator.

    A moderator's regex must compile with RE2 (see `TermMatcher`); `builtin` expressions,
    ours, are checked with Python's engine instead.
    """
    cleaned = pattern.strip()
    if not cleaned:
        raise InvalidPattern("The term is empty.", pattern=pattern)
    if len(cleaned) > MAX_PATTERN_LENGTH:
        raise InvalidPattern(
            f"That term is too long ({len(cleaned)} characters); "
            f"the limit is {MAX_PATTERN_LENGTH}.",
            pattern=pattern,
        )
    if not is_regex:
        if not normalise(cleaned):
            raise InvalidPattern(
                "That term has no letters or numbers left once accents, symbols and spacing "
                "are removed, so it could never match.",
                pattern=pattern,
            )
        return " ".join(cleaned.split())

    # Python's parser first: its messages are the clearer ones for plain syntax errors.
    try:
        re.compile(cleaned)
    except re.error as exc:
        raise InvalidPattern(
            f"That regular expression is not valid: {exc.msg}.", pattern=pattern
        ) from exc
    compiled = compile_regex_term(cleaned, pattern=pattern, builtin=builtin)
    if any(match.group() == "" for probe in _PROBES for match in compiled.finditer(probe)):
        raise InvalidPattern(
            "That regular expression can match empty text, so it would refuse every prompt.",
            pattern=pattern,
        )
    return cleaned
