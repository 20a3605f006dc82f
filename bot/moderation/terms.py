"""Banned terms for image prompts, checked before anything is reserved or sent to a provider.

People dodge word lists with case, accents, look-alike letters, leetspeak and spacing, so a
prompt is compared in a few *normalised forms* rather than as typed:

* ``normalise(prompt)``: the canonical form (see its docstring), with leetspeak decoded;
* the same without leetspeak decoding (so ``nude1`` and ``cat|nude`` are still seen);
* each of those *squashed*: runs of two or more one-character tokens are joined back into
  a word (``n u d e`` / ``n.u.d.e`` / ``n_u_d_e`` -> ``nude``). Only one-character tokens
  are joined, so ordinary words are never glued together. When such a run starts with the
  one-letter words "a" or "i" a second squashed form keeps that letter apart
  (``a n u d e`` -> ``a nude``), because the article is usually not part of the trick.

Plain terms match whole words of those forms, with a few allowances (see `TermMatcher`);
regex terms are the moderator's own expressions (RE2 syntax: Python's, less backreferences
and lookaround), searched case-insensitively in the same forms. Every moderator's pattern is
matched in time linear in the prompt's length (see `TermMatcher`). Everything here is pure
and synchronous.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import re2  # google-re2: linear-time matching, whatever the moderator writes

from bot.errors import InvalidPattern

MAX_PATTERN_LENGTH = 200
# RE2's memory for one compiled expression (program and DFA cache). A moderator's 200
# characters fit easily; when the DFA cache fills, RE2 falls back to a slower engine that is
# still linear in the prompt's length.
_RE2_MAX_MEM = 4 << 20


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


# --- Normalisation ------------------------------------------------------------------------

# Look-alike letters that Unicode normalisation leaves alone, keyed by their lower-case
# (casefolded, decomposed) form because that is what the table sees. Cyrillic and Greek
# homoglyphs, Latin letters with built-in strokes, and "small capitals" from fancy-text sites.
_CONFUSABLES: dict[str, str] = {
    # Cyrillic
    "а": "a", "в": "b", "е": "e", "к": "k", "м": "m", "н": "h", "о": "o", "п": "n",
    "р": "p", "с": "c", "т": "t", "у": "y", "х": "x", "і": "i", "ј": "j", "ѕ": "s",
    "ԁ": "d", "ԛ": "q", "ԝ": "w", "һ": "h", "ӏ": "l", "ү": "y",
    # Greek
    "α": "a", "β": "b", "γ": "y", "ε": "e", "η": "n", "ι": "i", "κ": "k", "μ": "u",
    "ν": "v", "ο": "o", "ρ": "p", "τ": "t", "υ": "u", "χ": "x", "ω": "w",
    # Latin letters without a decomposition
    "ı": "i", "ȷ": "j", "ɑ": "a", "ɡ": "g", "ø": "o", "đ": "d", "ð": "d", "ħ": "h",
    "ł": "l", "ŧ": "t", "ƀ": "b", "ɨ": "i", "ʉ": "u", "æ": "ae", "œ": "oe",
    # Small capitals
    "ᴀ": "a", "ʙ": "b", "ᴄ": "c", "ᴅ": "d", "ᴇ": "e", "ꜰ": "f", "ɢ": "g", "ʜ": "h",
    "ɪ": "i", "ᴊ": "j", "ᴋ": "k", "ʟ": "l", "ᴍ": "m", "ɴ": "n", "ᴏ": "o", "ᴘ": "p",
    "ʀ": "r", "ꜱ": "s", "ᴛ": "t", "ᴜ": "u", "ᴠ": "v", "ᴡ": "w", "ʏ": "y", "ᴢ": "z",
}  # fmt: skip

# Blank-looking characters that are letters or symbols as far as Unicode is concerned
# (Hangul fillers, the blank Braille pattern); the format characters (Cf) go by category.
_INVISIBLE = frozenset("\u115f\u1160\u3164\uffa0\u2800")

# Deleted rather than turned into a space, so "assassin's" stays one word ("assassins")
# instead of leaving a stray one-letter token for the squash step to glue onto neighbours.
_APOSTROPHES = frozenset("'`´ʼ‘’ʹ′")

# Leetspeak. Digits are decoded only inside tokens that also contain a letter, so "3 cats",
# "1920" and "4 000" keep their digits. "@", "$" and "€" are decoded anywhere in such a
# token ("@ss", "a$$"); "!", "|", "+" only between other characters, because at the edge
# of a word they are punctuation ("wow!", "|cat|") far more often than letters.
_LEET = str.maketrans({
    "0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t", "8": "b",
    "@": "a", "$": "s", "€": "e", "!": "i", "¡": "i", "|": "l", "+": "t",
})  # fmt: skip
_LEET_SYMBOLS = frozenset("@$€!¡|+")
_EDGE_PUNCTUATION = "!¡|+"  # leet symbols that only count between other characters
_LEET_SYMBOLS_TO_SPACE = str.maketrans(dict.fromkeys(_LEET_SYMBOLS, " "))


def _classify(char: str, *, keep_leet_symbols: bool) -> str:
    """What one character of the decomposed, casefolded text becomes ("" deletes it)."""
    if char in _INVISIBLE or char in _APOSTROPHES:
        return ""
    if char in _CONFUSABLES:
        return _CONFUSABLES[char]
    category = unicodedata.category(char)
    if category in ("Mn", "Me", "Cf"):
        return ""  # accents and other combining marks; zero-width and format characters
    if char.isspace():
        return " "
    if category[0] == "C":
        return ""  # controls, unassigned, private use
    if keep_leet_symbols and char in _LEET_SYMBOLS:
        return char  # decided per token by _decode_leet_token
    if category[0] in "LNM" or category == "So":
        return char  # letters, digits, spacing marks, emoji and other pictographs
    return " "  # punctuation and the remaining symbols separate words


class _CharTable(dict[int, str]):
    """A `str.translate` table filled lazily, one code point at a time, then cached."""

    def __init__(self, *, keep_leet_symbols: bool) -> None:
        super().__init__()
        self._keep_leet_symbols = keep_leet_symbols

    def __missing__(self, code_point: int) -> str:
        value = _classify(chr(code_point), keep_leet_symbols=self._keep_leet_symbols)
        self[code_point] = value
        return value


_DECODING_TABLE = _CharTable(keep_leet_symbols=True)
_LITERAL_TABLE = _CharTable(keep_leet_symbols=False)
# A whole token (no whitespace) with something leet in it; most tokens have none and are
# left alone without a Python call.
_LEET_CLASS = re.escape("".join(map(chr, _LEET)))
_LEET_TOKEN = re.compile(rf"(?<!\S)[^\s{_LEET_CLASS}]*[{_LEET_CLASS}]\S*")


def _decode_leet(token: str) -> str:
    """Decode one whitespace-free token (see `_LEET`)."""
    core = token.strip(_EDGE_PUNCTUATION)
    if not any(char.isalpha() for char in core):
        return token.translate(_LEET_SYMBOLS_TO_SPACE)  # a number, not a disguised word
    start = token.index(core)
    return " " * start + core.translate(_LEET) + " " * (len(token) - start - len(core))


def _normalise(text: str, *, decode_leet: bool) -> str:
    # NFKC first folds fullwidth forms, mathematical alphanumerics, circled letters and
    # ligatures to plain letters, so casefold sees ordinary characters; NFKD then splits
    # accents off so the table can drop them.
    text = unicodedata.normalize("NFKC", text).casefold()
    text = unicodedata.normalize("NFKD", text)
    text = text.translate(_DECODING_TABLE if decode_leet else _LITERAL_TABLE)
    if decode_leet:
        text = _LEET_TOKEN.sub(lambda match: _decode_leet(match.group()), text)
    return " ".join(text.split())


def normalise(text: str) -> str:
    """The canonical form of a prompt or plain term, for matching.

    In order:

    1. Unicode compatibility folding (NFKC): fullwidth ``ｎｕｄｅ``, mathematical ``𝐧𝐮𝐝𝐞``,
       circled ``ⓝⓤⓓⓔ``, superscripts and ligatures become plain letters and digits.
    2. Casefolding (a thorough lower-casing: ``ß`` -> ``ss``).
    3. Decomposition (NFKD) and removal of combining marks: accents go (``nüdé`` ->
       ``nude``), as do strike-through and other overlay marks.
    4. Look-alikes are mapped to Latin: Cyrillic and Greek homoglyphs (``а е о р с х у і
       ѕ ј`` ...), letters such as ``ı ø ł``, and small capitals (``ɴᴜᴅᴇ``).
    5. Invisible characters are deleted: zero-width space/joiners (U+200B-U+200D), word
       joiner (U+2060), BOM (U+FEFF), soft hyphen and every other format or control
       character, plus Hangul fillers and the blank Braille pattern. Apostrophes are deleted
       too, so ``assassin's`` reads ``assassins``.
    6. Leetspeak is decoded inside tokens that contain a letter: ``0 1 3 4 5 7 8`` ->
       ``o i e a s t b``; ``@ $ €`` -> ``a s e``; ``! | +`` -> ``i l t`` only between other
       characters. Tokens without letters ("3", "1920", "$5") keep their digits.
    7. Every run of whitespace, punctuation and (non-pictographic) symbols becomes a single
       space; the ends are trimmed.

    The result contains letters, digits, pictographs (emoji) and single spaces only, and
    ``normalise(normalise(x)) == normalise(x)``.
    """
    return _normalise(text, decode_leet=True)


def _squash_variants(text: str, *, decode_leet: bool) -> list[str]:
    """`text` with runs of two or more one-character tokens joined ("n u d e" -> "nude").

    Returns up to two forms: every run joined, and, when a run of three or more starts with
    "a" or "i", one where that letter stays a word of its own ("a n u d e" -> "a nude").
    """
    tokens = text.split(" ")
    if sum(len(token) == 1 for token in tokens) < 2:
        return []

    def join(run: list[str]) -> str:
        word = "".join(run)
        # Digits were kept while they stood alone ("n u d 3"); joined, they are leet again.
        return _decode_leet(word) if decode_leet else word

    all_joined: list[str] = []
    article_apart: list[str] = []
    index = 0
    while index < len(tokens):
        end = index
        while end < len(tokens) and len(tokens[end]) == 1:
            end += 1
        if end - index < 2:
            all_joined.append(tokens[index])
            article_apart.append(tokens[index])
            index += 1
            continue
        run = tokens[index:end]
        all_joined.append(join(run))
        if run[0] in ("a", "i") and len(run) >= 3:
            article_apart += [run[0], join(run[1:])]
        else:
            article_apart.append(join(run))
        index = end
    variants = dict.fromkeys((" ".join(all_joined), " ".join(article_apart)))
    return [variant for variant in variants if variant != text]


def _prompt_forms(prompt: str) -> list[str]:
    """Every form of `prompt` that terms are matched against, without duplicates."""
    forms: dict[str, None] = {}
    for decode_leet in (True, False):
        base = _normalise(prompt, decode_leet=decode_leet)
        forms[base] = None
        forms.update(dict.fromkeys(_squash_variants(base, decode_leet=decode_leet)))
    return list(forms)


# --- Validation ---------------------------------------------------------------------------

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
    compiled = (
        re.compile(cleaned, re.IGNORECASE)
        if builtin
        else _compile_moderator_regex(cleaned, pattern=pattern)
    )
    if any(match.group() == "" for probe in _PROBES for match in compiled.finditer(probe)):
        raise InvalidPattern(
            "That regular expression can match empty text, so it would refuse every prompt.",
            pattern=pattern,
        )
    return cleaned


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

    Each prompt form (see the module docstring) is searched. All plain terms share a single
    compiled pattern; each regex term is compiled on its own, because joining the
    moderator's expressions into one would change what their groups mean.

    ``skip_unusable`` leaves out terms that no longer pass `validate_pattern` (say, stored
    before a rule was added) instead of raising; they are listed in `skipped`.
    """

    def __init__(self, terms: Iterable[BannedTerm], *, skip_unusable: bool = False) -> None:
        self._plain_terms: list[BannedTerm] = []
        self._regex_terms: list[tuple[BannedTerm, Any]] = []  # compiled re or re2 patterns
        self.skipped: list[tuple[BannedTerm, InvalidPattern]] = []
        trie = _TrieNode()
        for term in terms:
            builtin = term.source == "default"
            try:
                cleaned = validate_pattern(term.pattern, is_regex=term.is_regex, builtin=builtin)
            except InvalidPattern as exc:
                if not skip_unusable:
                    raise
                self.skipped.append((term, exc))
                continue
            if term.is_regex:
                compiled = (
                    re.compile(cleaned, re.IGNORECASE)
                    if builtin
                    else _compile_moderator_regex(cleaned, pattern=term.pattern)
                )
                self._regex_terms.append((term, compiled))
                continue
            trie.add(_term_units(cleaned), len(self._plain_terms))
            self._plain_terms.append(term)
        self._plain_pattern: Any = None
        self._marker_groups: list[tuple[int, int]] = []  # (group number, plain term index)
        if trie.children:
            # RE2 has no lookbehind, so the letter-free edges are matched (one character, or
            # either end of the text) and the hit itself is group 1.
            self._plain_pattern = re2.compile(
                f"(?:^|[^{_LETTERS}])({trie.to_regex()}{_PLURAL})(?:[^{_LETTERS}]|$)",
                _PLAIN_OPTIONS,
            )
            self._marker_groups = [
                (number, int(name[1:])) for name, number in self._plain_pattern.groupindex.items()
            ]

    @property
    def compiled_pattern_count(self) -> int:
        """How many regular expressions each form of a prompt is searched with."""
        return len(self._regex_terms) + (self._plain_pattern is not None)

    def _plain_hits(self, form: str) -> Iterator[TermHit]:
        position = 0
        while (match := self._plain_pattern.search(form, position)) is not None:
            term_index = next(i for number, i in self._marker_groups if match.start(number) >= 0)
            yield TermHit(self._plain_terms[term_index], match.group(1))
            # From the end of the hit, not of the match: the character after a hit is also
            # the edge before the next one ("nude nude").
            position = match.end(1)

    def _hits_in(self, form: str) -> Iterator[TermHit]:
        if self._plain_pattern is not None:
            yield from self._plain_hits(form)
        for term, pattern in self._regex_terms:
            found = pattern.search(form)
            if found is not None:
                yield TermHit(term, found.group())

    def _all_hits(self, prompt: str) -> Iterator[TermHit]:
        for form in _prompt_forms(prompt):
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
