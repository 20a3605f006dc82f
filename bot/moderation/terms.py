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

import functools
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from bot.errors import InvalidPattern
from bot.moderation.normalise import normalise, prompt_forms
from bot.moderation.patterns import (
    TermSet,
    any_term_size,
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


@dataclass(frozen=True)
class _CompiledTerm:
    """One term checked, and compiled on its own if it is an expression."""

    term: BannedTerm
    builtin: bool
    cleaned: str  # as `validate_pattern` returns it
    pattern: Any  # an expression compiled: re (built-in) or re2; None for a plain term
    units: list[str] | None  # a plain term's pieces (see `_term_units`); None for a regex

    @classmethod
    def of(cls, term: BannedTerm) -> _CompiledTerm:
        """Raises InvalidPattern, with the moderator's explanation."""
        builtin = term.source == "default"
        cleaned = validate_pattern(term.pattern, is_regex=term.is_regex, builtin=builtin)
        if term.is_regex:
            pattern = compile_regex_term(cleaned, pattern=term.pattern, builtin=builtin)
            return cls(term, builtin, cleaned, pattern, None)
        return cls(term, builtin, cleaned, None, _term_units(cleaned))


def _plain_regex(terms: Sequence[_CompiledTerm]) -> str | None:
    """The one expression of all plain terms among `terms`: the hit is group 1, and the
    empty group ``t<i>`` after each term says which (i: its index among the plain terms)."""
    trie = _TrieNode()
    for index, term in enumerate(t for t in terms if t.units is not None):
        assert term.units is not None
        trie.add(term.units, index)
    if not trie.children:
        return None
    # RE2 has no lookbehind, so the letter-free edges are matched (one character, or either
    # end of the text) and the hit itself is group 1.
    return f"(?:^|[^{_LETTERS}])({trie.to_regex()}{_PLURAL})(?:[^{_LETTERS}]|$)"


def _moderator_regexes(terms: Sequence[_CompiledTerm]) -> list[str]:
    return [term.cleaned for term in terms if term.units is None and not term.builtin]


def _program_size(terms: Sequence[_CompiledTerm]) -> float:
    """The size of the one expression that finds any plain term or moderator's expression of
    `terms` (`any_term_size`): 0 if there is none, infinite if RE2 won't compile it."""
    plain, regexes = _plain_regex(terms), _moderator_regexes(terms)
    return 0 if plain is None and not regexes else any_term_size(plain, regexes)


@functools.lru_cache(maxsize=4)
def _builtin_size(terms: tuple[BannedTerm, ...]) -> float:
    """What the built-in terms take of the one expression (the same for every server)."""
    return _program_size([_CompiledTerm.of(term) for term in terms])


def _fitting(builtin: list[_CompiledTerm], server: list[_CompiledTerm], budget: int) -> int:
    """How many of `server`, oldest first, fit the size budget together."""
    base = _builtin_size(tuple(term.term for term in builtin))

    def fits(count: int) -> bool:
        return _program_size([*builtin, *server[:count]]) - base <= budget

    if fits(len(server)):
        return len(server)
    fitting, too_many = 0, len(server)  # adding terms never makes the program smaller
    while too_many - fitting > 1:
        middle = (fitting + too_many) // 2
        fitting, too_many = (middle, too_many) if fits(middle) else (fitting, middle)
    return fitting


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
    plain terms such as "lilil…", keep them all busy). So with ``size_budget``, a server's
    own terms (all but the built-in ones) are in force oldest first as long as what they add
    to the program that finds them (`size`: RE2 instructions) stays within the budget; the
    newer ones are listed in `over_budget` and not matched. The cost of a check is then
    bounded by construction: the prompt's length (every form) times the program's size.

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
        self.skipped: list[tuple[BannedTerm, InvalidPattern]] = []
        self.over_budget: list[BannedTerm] = []
        compiled: list[_CompiledTerm] = []
        for term in terms:
            try:
                compiled.append(_CompiledTerm.of(term))
            except InvalidPattern as exc:
                if not skip_unusable:
                    raise
                self.skipped.append((term, exc))
        self._builtin = [term for term in compiled if term.builtin]
        if size_budget is not None:
            server = [term for term in compiled if not term.builtin]
            left_out = server[_fitting(self._builtin, server, size_budget) :]
            self.over_budget = [term.term for term in left_out]
            out = {id(term) for term in left_out}
            compiled = [term for term in compiled if id(term) not in out]
        self._compiled = compiled
        self._plain_terms = [term.term for term in compiled if term.units is not None]
        # In the order given: compiled re (built-in) or re2 (a moderator's, with its index in
        # the term set; None for built-in ones).
        self._regex_terms: list[tuple[BannedTerm, Any, int | None]] = []
        moderator_regexes = _moderator_regexes(compiled)
        in_set = iter(range(len(moderator_regexes)))
        for checked in compiled:
            if checked.units is None:
                index = None if checked.builtin else next(in_set)
                self._regex_terms.append((checked.term, checked.pattern, index))
        plain_regex = _plain_regex(compiled)
        self._plain_pattern: Any = None
        self._marker_groups: list[tuple[int, int]] = []  # (group number, plain term index)
        if plain_regex is not None:
            self._plain_pattern = compile_plain_terms(plain_regex)
            self._marker_groups = [
                (number, int(name[1:])) for name, number in self._plain_pattern.groupindex.items()
            ]
        self._any_term: Any = None
        self.size = 0  # what the server's terms in force add to the built-in ones' program
        if plain_regex is not None or moderator_regexes:
            self._any_term = compile_any_term(plain_regex, moderator_regexes)
            builtin_size = _builtin_size(tuple(term.term for term in self._builtin))
            self.size = int(pattern_size(self._any_term) - builtin_size)
        self._term_set = TermSet(moderator_regexes) if moderator_regexes else None

    def _size_of(self, terms: Sequence[_CompiledTerm]) -> float:
        return _program_size(terms) - _builtin_size(tuple(term.term for term in self._builtin))

    def size_with(self, term: BannedTerm) -> float:
        """`size` if `term` were added after the terms in force (infinite: more than RE2
        will compile at all). Raises InvalidPattern."""
        return self._size_of([*self._compiled, _CompiledTerm.of(term)])

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
