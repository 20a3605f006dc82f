"""The normal forms a prompt is compared in, so disguised spellings meet the banned terms.

People dodge word lists with case, accents, look-alike letters, leetspeak and spacing, so a
prompt is compared in a few *normalised forms* rather than as typed (`prompt_forms`):

* ``normalise(prompt)``: the canonical form (see its docstring), with leetspeak decoded;
* the same without leetspeak decoding (so ``nude1`` and ``cat|nude`` are still seen);
* each of those *squashed*: runs of two or more one-character tokens are joined back into
  a word (``n u d e`` / ``n.u.d.e`` / ``n_u_d_e`` -> ``nude``). Only one-character tokens
  are joined, so ordinary words are never glued together. When such a run starts with the
  one-letter words "a" or "i" a second squashed form keeps that letter apart
  (``a n u d e`` -> ``a nude``), because the article is usually not part of the trick.

Plain terms are normalised the same way (see `bot.moderation.terms`). Everything here is pure
and synchronous.
"""

from __future__ import annotations

import re
import unicodedata

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


def prompt_forms(prompt: str) -> list[str]:
    """Every form of `prompt` that terms are matched against, without duplicates."""
    forms: dict[str, None] = {}
    for decode_leet in (True, False):
        base = _normalise(prompt, decode_leet=decode_leet)
        forms[base] = None
        forms.update(dict.fromkeys(_squash_variants(base, decode_leet=decode_leet)))
    return list(forms)
