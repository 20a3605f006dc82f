"""Banned-term matching under hostile input: the CPU one prompt check costs.

A moderator of any server may add up to 500 terms, plain or regular expressions, and a member
may send any prompt of up to the longest length a variant accepts. RE2 keeps matching linear
in the prompt, but per character it may step through every instruction of the terms' program
at once, so 500 well-chosen terms cost seconds per prompt. Checking is bounded by the size
budget a server's terms share (MAX_BANNED_TERMS_SIZE_PER_SERVER); this prints, for each
hostile case, the CPU time of the slowest of several checks of fresh prompts (each written to
keep RE2 busiest, in every normalised form a prompt is checked in) and the mean.

    python -m bench.terms [--budget N] [--repeats N]

`--budget 0` checks every term, as before the budget existed (and the code before it:
`PYTHONPATH=<an older checkout> python -m bench.terms` runs the same cases against it).
"""

from __future__ import annotations

import argparse
import inspect
import random
import statistics
import time
from collections.abc import Callable

from bot.catalogue import CATALOGUE
from bot.moderation.normalise import prompt_forms
from bot.moderation.terms import DEFAULT_TERMS, BannedTerm, TermMatcher

try:  # absent before the size budget existed
    from bot.moderation.patterns import DEFAULT_TERMS_SIZE_BUDGET
except ImportError:
    DEFAULT_TERMS_SIZE_BUDGET = 0

LONGEST_PROMPT = max(variant.max_prompt_chars for variant in CATALOGUE.values())
TERMS = 500  # MAX_SERVER_TERMS
# Single-letter tokens, one of them after "a", and a leet token: the prompt is checked in six
# normalised forms (decoded and as typed, each also with the letters joined two ways).
SIX_FORMS = " n1 a b c"
LETTERS = "abcdefghij"


def regex_family(shape: Callable[[int], str]) -> list[BannedTerm]:
    return [BannedTerm(shape(n), True, "server") for n in range(TERMS)]


def plain_family(rng: random.Random, alphabet: str) -> list[BannedTerm]:
    words = set()
    while len(words) < TERMS:
        words.add("".join(rng.choice(alphabet) for _ in range(rng.randint(20, 40))) + "x")
    return [BannedTerm(word, False, "server") for word in sorted(words)]


def cases(rng: random.Random) -> list[tuple[str, list[BannedTerm], str]]:
    """(label, the server's terms, the letters its hostile prompts are made of). None of the
    terms is in the prompts: a prompt that hit one would be refused, and cost its member a
    strike."""
    return [
        # An expression per term that needs every position of its last 10-20 characters
        # remembered: RE2 builds a new state for almost every character.
        (
            "regex [ab]*a[ab]{k}z",
            regex_family(lambda n: f"[ab]*{'ab'[n % 2]}[ab]{{{10 + n % 10}}}z{n}"),
            "ab",
        ),
        (
            "regex x.{100}z",
            regex_family(lambda n: f"{LETTERS[n % 10]}.{{{100 + n % 50}}}z{n}"),
            "abcdefghijklmnop ",
        ),
        # The hostile shapes for a backtracking engine (tests/e2e/test_hostile_terms.py).
        (
            "regex (a|aa)+b and kin",
            regex_family(
                lambda n: (
                    ("(a|aa)+b", "(a|a)*b", "(?:a|ab)+c", "a*a*a*a*a*a*a*a*b")[n % 4]
                    + f"[0-9]{{{1 + n // 4}}}"
                )
            ),
            "a",
        ),
        # Plain terms: "l" also accepts "i" and every letter may repeat, so 500 long words of
        # l and i keep the whole program busy on a prompt of l and i.
        ("plain words of l and i", plain_family(rng, "li"), "li"),
    ]


def hostile_prompt(rng: random.Random, alphabet: str) -> str:
    body = "".join(rng.choice(alphabet) for _ in range(LONGEST_PROMPT - len(SIX_FORMS)))
    return body + SIX_FORMS


def matcher_for(terms: list[BannedTerm], budget: int) -> TermMatcher:
    if budget and "size_budget" in inspect.signature(TermMatcher).parameters:
        return TermMatcher([*DEFAULT_TERMS, *terms], size_budget=budget)
    return TermMatcher([*DEFAULT_TERMS, *terms])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--budget",
        type=int,
        default=DEFAULT_TERMS_SIZE_BUDGET,
        help="size budget per server (0: none, every term in force)",
    )
    args = parser.parse_args()
    rng = random.Random(7)
    sample = hostile_prompt(rng, "ab")
    print(
        f"{TERMS} terms per case; prompts of {LONGEST_PROMPT} characters, checked in"
        f" {len(prompt_forms(sample))} forms; budget {args.budget or 'none'}"
    )
    worst_overall = 0.0
    for label, terms, alphabet in cases(rng):
        try:
            matcher = matcher_for(terms, args.budget)
        except Exception as exc:  # without a budget, more than RE2 compiles as one expression
            print(f"  {label:<26} not compiled: {exc}")
            continue
        in_force = len(terms) - len(getattr(matcher, "over_budget", []))
        times = []
        for _ in range(args.repeats):
            prompt = hostile_prompt(rng, alphabet)  # a fresh one: nothing cached helps
            started = time.process_time()
            hit = matcher.first_hit(prompt)
            times.append(time.process_time() - started)
            assert hit is None, (label, hit)
        worst_overall = max(worst_overall, max(times))
        print(
            f"  {label:<26} {in_force:3d} in force  worst {max(times) * 1000:8.1f} ms"
            f"  mean {statistics.mean(times) * 1000:8.1f} ms CPU per prompt"
        )
    print(f"slowest check: {worst_overall * 1000:.1f} ms CPU")


if __name__ == "__main__":
    main()
