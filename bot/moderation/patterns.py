"""Moderators' patterns, checked and compiled: a banned term is refused with a message the
moderator can act on before it is stored, and every pattern a moderator wrote is compiled
for RE2, whose matching time grows linearly with the prompt whatever the pattern.

Linear is not cheap: per character of a prompt, RE2 may have to step through every
instruction of a program at once (an expression such as ``[ab]*a[ab]{20}z`` keeps them all
busy). So what a server's terms add to the program that finds them all (`compile_any_term`,
sized by `pattern_size`) is limited by a budget (`bot.moderation.terms.TermMatcher`): the
cost of checking a prompt is bounded by that budget and the prompt's length, by construction.

Only the built-in expressions (ours, which need lookaround) are compiled with Python's
engine; `bot.moderation.terms` matches prompts with what is compiled here.
"""

from __future__ import annotations

import math
import re
from typing import Any

import re2  # google-re2: linear-time matching, whatever the moderator writes

from bot.errors import InvalidPattern
from bot.moderation.normalise import normalise
from bot.text import plural

MAX_PATTERN_LENGTH = 200
# What one server's own terms may add to the RE2 program that finds them (see `pattern_size`
# and `bot.moderation.terms.TermMatcher`): an ordinary word takes 15-20, so about 200 fit,
# and checking a prompt of 4,000 characters against the most hostile terms within it takes
# at most about 0.7 s of CPU (bench/terms.py). The setting MAX_BANNED_TERMS_SIZE_PER_SERVER;
# this is its default.
DEFAULT_TERMS_SIZE_BUDGET = 4000
# RE2's memory for one compiled expression (program and DFA cache). A moderator's 200
# characters fit easily; when the DFA cache fills, RE2 falls back to a slower engine that is
# still linear in the prompt's length.
_RE2_MAX_MEM = 4 << 20
# For the expressions that hold a whole server's terms (`compile_any_term`, `TermSet`):
# programs within the largest budget allowed take a few MiB; the rest is DFA cache, which
# RE2 empties and refills when it is full (the cost of that is within the size budget).
_COMBINED_MAX_MEM = 8 << 20
_PROBES = ("", "a", "a b", "the quick brown fox 123")


def _re2_options(*, case_sensitive: bool, max_mem: int = _RE2_MAX_MEM, capture: bool = True) -> Any:
    options = re2.Options()
    options.case_sensitive = case_sensitive
    options.log_errors = False  # RE2 would print its own copy of every refusal to stderr
    options.max_mem = max_mem
    options.never_capture = not capture
    return options


_MODERATOR_OPTIONS = _re2_options(case_sensitive=False)
# Prompts and plain terms are casefolded. All of a server's plain terms are in one.
_PLAIN_OPTIONS = _re2_options(case_sensitive=True, max_mem=_COMBINED_MAX_MEM)
_SET_OPTIONS = _re2_options(case_sensitive=False, max_mem=_COMBINED_MAX_MEM)
# It only says whether anything matched, so it captures nothing.
_ANY_TERM_OPTIONS = _re2_options(case_sensitive=False, max_mem=_COMBINED_MAX_MEM, capture=False)
# Always in a term set, at index 0: RE2 reports no match at all when its DFA runs out of
# memory, so a result without this index means "not checked", never "nothing found".
_SET_SENTINEL = r"\A"


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


def pattern_size(compiled: Any) -> int:
    """How much work one character of a prompt can cost with this RE2 expression: its program
    size (instructions), which bounds how many of them RE2 may have to step through at once."""
    return int(compiled.programsize)


def any_term_size(plain_regex: str | None, moderator_regexes: list[str]) -> float:
    """`pattern_size` of `compile_any_term`; infinite if RE2 finds it too large to compile."""
    try:
        return pattern_size(compile_any_term(plain_regex, moderator_regexes))
    except re2.error:
        return math.inf


def compile_any_term(plain_regex: str | None, moderator_regexes: list[str]) -> Any:
    """One expression that matches wherever any of these does: the plain terms' expression
    (case-sensitive, as `compile_plain_terms`) and each moderator's expression
    (case-insensitive). One pass over a prompt says whether any of them is in it; it
    captures nothing, so RE2 never needs its slower engines to say where."""
    branches = [f"(?:{regex})" for regex in moderator_regexes]
    if plain_regex is not None:
        branches.insert(0, f"(?-i:{plain_regex})")
    return re2.compile("|".join(branches), _ANY_TERM_OPTIONS)


class TermSet:
    """Moderators' expressions compiled together (`re2.Set`): one pass over a text gives the
    position in the list of every expression found in it."""

    def __init__(self, moderator_regexes: list[str]) -> None:
        self._set = re2.Set.SearchSet(_SET_OPTIONS)
        for regex in (_SET_SENTINEL, *moderator_regexes):
            self._set.Add(regex)
        self._set.Compile()

    def matching(self, text: str) -> frozenset[int] | None:
        """The indices (into the list given) of the expressions found in `text`; None if RE2
        could not finish (out of memory: the caller must check them another way)."""
        found = self._set.Match(text) or []
        if 0 not in found:
            return None
        return frozenset(index - 1 for index in found if index)


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


_SMALLER = (
    "Every prompt is checked against all of a server's terms, so what they take together is "
    "limited to keep that quick for everyone. Remove terms you no longer need with /settings "
    "terms-remove"
)


def too_large_text(kind: str, size: float, current: int, budget: int) -> str:
    """The moderator's refusal of a term that would take the server over its size budget."""
    return (
        f"That {kind} would take this server's banned terms over their size budget: with it "
        f"they would need {size:,.0f} of the {budget:,} allowed (now {current:,}). {_SMALLER}, or "
        "write a smaller one: a count such as {50} repeats what comes before it that many "
        "times, and `.` or a class such as [^x] takes more than a plain letter."
    )


def over_budget_text(not_in_force: int) -> str:
    """The moderator's refusal of any term while older ones are over the size budget."""
    verb = "is" if not_in_force == 1 else "are"
    return (
        "This server's banned terms are already over their size budget: "
        f"{plural(not_in_force, 'newer term')} {verb} left out, not in force (stored before "
        f"the budget, or when it was larger). {_SMALLER} to make room for them first."
    )
