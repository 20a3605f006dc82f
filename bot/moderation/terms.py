"""Banned terms for image prompts, checked before anything is reserved or sent to a provider:
the built-in list, and `TermMatcher`, which finds a server's terms in a prompt.

A prompt is searched in a few normalised forms (`bot.moderation.normalise`), so case,
accents, look-alike letters, leetspeak and spacing don't hide a term. Plain terms match whole
words of those forms, with a few allowances (see `TermMatcher`); regex terms are the
moderator's own expressions (RE2 syntax: Python's, less backreferences and lookaround),
searched case-insensitively in the same forms, and checked and compiled by
`bot.moderation.patterns`. Every moderator's pattern is matched in time linear in the
prompt's length, all of a server's terms in one pass, and what that pass costs is bounded by
the size budget the server's terms share. Everything here is pure and synchronous.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from bot.errors import InvalidPattern
from bot.moderation.normalise import normalise, prompt_forms
from bot.moderation.patterns import (
    TermSet,
    compile_any_term,
    compile_plain_terms,
    compile_regex_term,
    pattern_size,
    validate_pattern,
)


@dataclass(frozen=True)
class BannedTerm:
    pattern: str  # as the moderator typed it
    is_regex: bool  # False: a plain term or phrase; True: a Python regular expression
    source: str  # "default" (the built-in list) or "server"


@dataclass(frozen=True)
class TermHit:
    term: BannedTerm
    matched: str  # the fragment of the normalised prompt that matched; for moderators only


def _default(pattern: str, *, is_regex: bool = False) -> BannedTerm:
    return BannedTerm(pattern, is_regex=is_regex, source="default")


# The built-in list: short and conservative, meant as a floor. Moderators extend it with
# their own terms in /settings. A server with an age-restricted channel could relax the
# generic explicit terms there (the bot decides that elsewhere, not here); the first group,
# sexualised minors, is kept apart so it stays in force even then. Plain terms already
# match plurals, repeated letters and disguised spellings, so no variants are listed.
DEFAULT_TERMS: tuple[BannedTerm, ...] = (
    # Sexualised minors.
    _default("loli"),
    _default("lolicon"),
    _default("shota"),
    _default("shotacon"),
    _default("child porn"),
    _default("underage nude"),
    _default("underage naked"),
    _default("nude child"),
    _default("nude children"),
    _default("naked child"),
    _default("naked children"),
    _default("nude minor"),
    _default("naked minor"),
    # Generic explicit content.
    _default("nude"),
    _default("nsfw"),
    _default("porn"),
    _default("porno"),
    _default("pornography"),
    _default("pornographic"),
    _default("hentai"),
    # Regexes (matched against the normalised prompt) where a plain term would refuse
    # everyday prompts: the naked mole rat and "naked eye"; Gore-Tex and Al Gore.
    _default(r"(?<![a-z])n+a+k+e+d+(?![a-z])(?! ?(?:mole|eye))", is_regex=True),
    _default(r"(?<![a-z])(?<!\bal )g+o+r+(?:e+s?|y+)(?![a-z])(?! ?tex)", is_regex=True),
)


# --- Matching -----------------------------------------------------------------------------

# A letter, for word boundaries (what Python calls a word character, less digits and "_"):
# digits do not count, so "nude2" is still the word "nude".
_LETTERS = r"\pL\p{Nl}\p{No}"
# Plain terms also match their plural: "nudes", "asses".
_PLURAL = r"(?:e?s)?"
_WORD_GAP = " ?"  # between the words of a phrase: one space or none ("childporn")


def _letter_unit(char: str) -> str:
    # Each letter may repeat ("nuuude"). A term's "l" also accepts "i": "1" is leet for
    # both but normalises to "i", and a capital I is the classic look-alike for "l".
    return "[li]+" if char == "l" else re.escape(char) + "+"


def _term_units(term: str) -> list[str]:
    """A plain term as a sequence of regex pieces: one per letter, one per word gap."""
    units: list[str] = []
    for word in normalise(term).split(" "):
        if units:
            units.append(_WORD_GAP)
        units += [_letter_unit(char) for char in word]
    return units


@dataclass
class _TrieNode:
    children: dict[str, _TrieNode] = field(default_factory=dict)
    term_index: int | None = None

    def add(self, units: list[str], term_index: int) -> None:
        node = self
        for unit in units:
            node = node.children.setdefault(unit, _TrieNode())
        if node.term_index is None:  # an equivalent term was listed first; it wins
            node.term_index = term_index

    def to_regex(self) -> str:
        # Shared prefixes are written once, so 500 terms cost a handful of character tests
        # per position instead of 500 alternatives. The empty named group at each end says
        # which term matched; longer continuations are tried first (RE2, like Python, prefers
        # the earlier alternative).
        branches = [unit + child.to_regex() for unit, child in self.children.items()]
        if self.term_index is not None:
            branches.append(f"(?P<t{self.term_index}>)")
        return branches[0] if len(branches) == 1 else "(?:" + "|".join(branches) + ")"


def _alone(units: list[str]) -> str:
    """A plain term's expression on its own, as it is in the shared one."""
    node = _TrieNode()
    node.add(units, 0)
    return node.to_regex()


@dataclass(frozen=True)
class _CompiledTerm:
    """One term checked and compiled on its own: how it goes into a matcher, and its size."""

    builtin: bool
    cleaned: str  # as `validate_pattern` returns it
    pattern: Any  # compiled: re (a built-in expression), re2, or None (a built-in word)
    units: list[str] | None  # a plain term's pieces (see `_term_units`); None for a regex
    size: int  # `pattern_size`

    @classmethod
    def of(cls, term: BannedTerm) -> _CompiledTerm:
        """Raises InvalidPattern, with the moderator's explanation."""
        builtin = term.source == "default"
        cleaned = validate_pattern(term.pattern, is_regex=term.is_regex, builtin=builtin)
        units: list[str] | None = None
        if term.is_regex:
            pattern = compile_regex_term(cleaned, pattern=term.pattern, builtin=builtin)
        else:
            units = _term_units(cleaned)
            pattern = None if builtin else compile_plain_terms(_alone(units))  # for its size
        size = 0 if builtin else pattern_size(pattern)
        return cls(builtin, cleaned, pattern, units, size)


def term_size(term: BannedTerm) -> int:
    """A moderator's term's share of its server's size budget (see `TermMatcher`): the RE2
    program size of the term compiled alone. Raises InvalidPattern."""
    return _CompiledTerm.of(term).size


class TermMatcher:
    """Checks prompts against a fixed list of banned terms, compiled once.

    Plain terms are normalised like prompts, then match:

    * whole words only: not inside a longer word ("classic" does not hit "ass", "therapist"
      does not hit "rapist"), where only letters count as word characters ("nude2" hits);
    * with any letter repeated ("nuuude"), a plural "s"/"es" ("nudes"), and "i" for "l"
      ("1oli" hits "loli");
    * phrases with one space or none between words ("child porn", "child-porn",
      "childporn").

    Regex terms are searched case-insensitively in the same forms, so they see normalised
    text: lower case, no accents, single spaces, leetspeak decoded in one form and kept in
    another (write ``nude``, not ``n[uü]de``). Word boundaries are up to the moderator; in
    RE2 ``\\b``, ``\\w`` and ``\\d`` are ASCII-only, which normalised Latin text is.

    Everything a moderator wrote, plain or regex, is matched with RE2, whose time grows
    linearly with the prompt whatever the pattern: a plain term is a regex too, and one such
    as "aaaaaaab" is as slow as ``a+a+a+a+a+a+a+b+`` under a backtracking engine. Only the
    built-in expressions, which need lookaround and are tested here for speed on hostile
    prompts, use Python's engine.

    Linear is not enough when one server's terms may cost every server's prompts: per
    character, RE2 may step through every instruction of the program (``[ab]*a[ab]{20}z``, or
    plain terms such as "lilil…", keep them all busy). So each of the server's terms has a
    size (`pattern_size` of it compiled alone), and with ``size_budget`` they are in force
    oldest first while their sizes add up to at most the budget; the others are listed in
    `over_budget` and not matched. The cost of a check is then bounded by construction: the
    prompt's length (every form) times the budget.

    Each prompt form (see `prompt_forms`) is searched in one pass by one expression that
    holds all plain terms and every moderator's expression (`compile_any_term`). Only when it
    finds something are the forms searched again to say which term: the plain terms' own
    expression for where, a `TermSet` for which moderator's expressions, then the first of
    those alone for the fragment to report.

    ``skip_unusable`` leaves out terms that no longer pass `validate_pattern` (say, stored
    before a rule was added) instead of raising; they are listed in `skipped`.
    """

    def __init__(
        self,
        terms: Iterable[BannedTerm],
        *,
        skip_unusable: bool = False,
        size_budget: int | None = None,
    ) -> None:
        self._plain_terms: list[BannedTerm] = []
        # In the order given: compiled re (built-in) or re2 (a moderator's, with its index in
        # the term set; None for built-in ones).
        self._regex_terms: list[tuple[BannedTerm, Any, int | None]] = []
        moderator_regexes: list[str] = []
        self.skipped: list[tuple[BannedTerm, InvalidPattern]] = []
        self.over_budget: list[BannedTerm] = []
        self.size = 0  # of the server's terms in force; the built-in ones don't count
        trie = _TrieNode()
        for term in terms:
            try:
                compiled = _CompiledTerm.of(term)
            except InvalidPattern as exc:
                if not skip_unusable:
                    raise
                self.skipped.append((term, exc))
                continue
            if not compiled.builtin:
                if size_budget is not None and self.size + compiled.size > size_budget:
                    self.over_budget.append(term)
                    continue
                self.size += compiled.size
            if compiled.units is not None:
                trie.add(compiled.units, len(self._plain_terms))
                self._plain_terms.append(term)
                continue
            index = None if compiled.builtin else len(moderator_regexes)
            if index is not None:
                moderator_regexes.append(compiled.cleaned)
            self._regex_terms.append((term, compiled.pattern, index))
        plain_regex: str | None = None
        self._plain_pattern: Any = None
        self._marker_groups: list[tuple[int, int]] = []  # (group number, plain term index)
        if trie.children:
            # RE2 has no lookbehind, so the letter-free edges are matched (one character, or
            # either end of the text) and the hit itself is group 1.
            plain_regex = f"(?:^|[^{_LETTERS}])({trie.to_regex()}{_PLURAL})(?:[^{_LETTERS}]|$)"
            self._plain_pattern = compile_plain_terms(plain_regex)
            self._marker_groups = [
                (number, int(name[1:])) for name, number in self._plain_pattern.groupindex.items()
            ]
        self._any_term: Any = None
        if plain_regex is not None or moderator_regexes:
            self._any_term = compile_any_term(plain_regex, moderator_regexes)
        self._term_set = TermSet(moderator_regexes) if moderator_regexes else None

    @property
    def compiled_pattern_count(self) -> int:
        """How many expressions each form of a prompt is searched with when nothing in it is
        banned: one for all plain terms and moderators' expressions, plus each built-in
        expression (Python's engine)."""
        builtin = sum(index is None for _, _, index in self._regex_terms)
        return builtin + (self._any_term is not None)

    def _plain_hits(self, form: str) -> Iterator[TermHit]:
        position = 0
        while (match := self._plain_pattern.search(form, position)) is not None:
            term_index = next(i for number, i in self._marker_groups if match.start(number) >= 0)
            yield TermHit(self._plain_terms[term_index], match.group(1))
            # From the end of the hit, not of the match: the character after a hit is also
            # the edge before the next one ("nude nude").
            position = match.end(1)

    def _moderator_regexes_in(self, form: str) -> frozenset[int] | None:
        """Which moderators' expressions are in `form` (None: every one may be)."""
        if self._term_set is None:
            return frozenset()
        return self._term_set.matching(form)

    def _hits_in(self, form: str) -> Iterator[TermHit]:
        found = self._any_term is not None and self._any_term.search(form) is not None
        if found and self._plain_pattern is not None:
            yield from self._plain_hits(form)
        # Moderators' expressions found in this form: asked only once something was found.
        moderator_hits = self._moderator_regexes_in(form) if found else frozenset()
        for term, pattern, index in self._regex_terms:
            if index is not None and moderator_hits is not None and index not in moderator_hits:
                continue
            hit = pattern.search(form)
            if hit is not None:
                yield TermHit(term, hit.group())

    def _all_hits(self, prompt: str) -> Iterator[TermHit]:
        for form in prompt_forms(prompt):
            yield from self._hits_in(form)

    def first_hit(self, prompt: str) -> TermHit | None:
        """The first banned term found in `prompt`, or None if it may be sent.

        Forms are searched in order (leet-decoded, its squashed forms, then as typed), so
        the term reported is the first one found, not necessarily the most specific.
        """
        return next(self._all_hits(prompt), None)

    def hits(self, prompt: str) -> list[TermHit]:
        """Every distinct term found, in the order found (for moderators' logs).

        A left-to-right scan: a term wholly inside another hit (e.g. "nude" inside "nude
        child") is not listed separately.
        """
        seen: dict[BannedTerm, TermHit] = {}
        for hit in self._all_hits(prompt):
            seen.setdefault(hit.term, hit)
        return list(seen.values())
