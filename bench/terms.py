"""Banned-term matching under hostile input: the slowest time one prompt check takes.

A moderator of any server may add regular expressions, and a member may send any prompt of
up to the longest length a variant accepts. Matching must stay bounded (linear in the
prompt) whatever both write. This prints, for each hostile case, the slowest of several
checks and its ratio to the time budget a check is given (bot/moderation/strikes.py), and
how the time grows when the prompt doubles (about 2× is linear; backtracking shows far more).

    python -m bench.terms
"""

from __future__ import annotations

import argparse
import random
import time
from collections.abc import Callable
from functools import partial

from bot.catalogue import CATALOGUE
from bot.moderation.patterns import MAX_PATTERN_LENGTH
from bot.moderation.strikes import MATCH_TIME_BUDGET, MAX_SERVER_TERMS
from bot.moderation.terms import BannedTerm, TermMatcher

LONGEST_PROMPT = max(variant.max_prompt_chars for variant in CATALOGUE.values())
# Patterns that backtrack exponentially (or polynomially) in Python's engine.
HOSTILE_REGEXES = ("(a|aa)+b", "(a|a)*b", "(?:a|ab)+c", "a*a*a*a*a*a*a*a*b", "(a+)+$")
# A plain term is a regex too once its letters may repeat (`a+a+…b+`).
HOSTILE_PLAIN = ("aaaaaaaab", "lililili")


def slowest(check: Callable[[], object], repeats: int) -> float:
    check()  # warm: the first call compiles and caches, which the growth figure must not see
    worst = 0.0
    for _ in range(repeats):
        started = time.perf_counter()
        check()
        worst = max(worst, time.perf_counter() - started)
    return worst


def server_terms(count: int) -> list[BannedTerm]:
    """`count` distinct terms of the longest length allowed, half of them regexes."""
    terms = []
    for n in range(count):
        word = f"term{n:04d}" + "x" * (MAX_PATTERN_LENGTH - 8 - 4)
        terms.append(BannedTerm(f"{word[:-8]}(a|aa)+b" if n % 2 else word, n % 2 == 1, "server"))
    return terms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    print(f"budget {MATCH_TIME_BUDGET:g} s per check; longest prompt {LONGEST_PROMPT} characters")
    cases: list[tuple[str, list[BannedTerm]]] = [
        (f"regex {p!r}", [BannedTerm(p, True, "server")]) for p in HOSTILE_REGEXES
    ]
    cases += [(f"plain {p!r}", [BannedTerm(p, False, "server")]) for p in HOSTILE_PLAIN]
    cases.append((f"{MAX_SERVER_TERMS} terms, half regex", server_terms(MAX_SERVER_TERMS)))
    # Runs of the letters the patterns repeat, broken so that normalisation (which squashes
    # repeated letters) leaves the prompt its full length: "aba ab aab…" never matches.
    rng = random.Random(7)
    full = "".join(rng.choice("aab il") for _ in range(LONGEST_PROMPT))
    half = full[: LONGEST_PROMPT // 2]
    worst_ratio = 0.0
    for label, terms in cases:
        matcher = TermMatcher(terms)
        t_half = slowest(partial(matcher.first_hit, half), args.repeats)
        t_full = slowest(partial(matcher.first_hit, full), args.repeats)
        ratio = t_full / MATCH_TIME_BUDGET
        worst_ratio = max(worst_ratio, ratio)
        print(
            f"  {label:<34} {t_full * 1000:8.2f} ms  ({ratio:.4f} of the budget;"
            f" ×{t_full / max(t_half, 1e-9):.1f} when the prompt doubles)"
        )
    print(f"worst check: {worst_ratio:.4f} of the budget (target ≤ 0.05)")


if __name__ == "__main__":
    main()
