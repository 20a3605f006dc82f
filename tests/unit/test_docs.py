"""The docs cannot rot: the README stays short enough for a first-time admin, and every
relative link in the README, CONTRIBUTING, the CHANGELOG and docs/ points to a file (and a
heading) that exists."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
README_LIMIT_BYTES = 12 * 1024

# Written in parallel on other branches of issue 23; a link to one of them is accepted while
# the file is missing. Empty this set once they are merged.
_FENCE = re.compile(r"^(```|~~~).*?^\1", re.MULTILINE | re.DOTALL)
_INLINE_CODE = re.compile(r"`[^`\n]*`")
# [text](target) and ![alt](target); the text may run over several lines.
_LINK = re.compile(r"\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.MULTILINE)


def documents() -> list[Path]:
    return [
        ROOT / "README.md",
        ROOT / "CONTRIBUTING.md",
        ROOT / "CHANGELOG.md",
        *sorted((ROOT / "docs").rglob("*.md")),
    ]


def _prose(text: str) -> str:
    """The text outside code blocks (a `](` in a code sample is not a link)."""
    return _FENCE.sub("", text)


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, inline code kept as its text,
    punctuation dropped, spaces as hyphens."""
    text = heading.replace("`", "").lower()
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)  # a link in a heading: its text
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    found: set[str] = set()
    for heading in _HEADING.findall(_prose(path.read_text(encoding="utf-8"))):
        anchor = github_anchor(heading)
        numbered, n = anchor, 0
        while numbered in found:  # GitHub numbers repeated headings: name, name-1, name-2
            n += 1
            numbered = f"{anchor}-{n}"
        found.add(numbered)
    return found


def relative_links(path: Path) -> list[str]:
    text = _INLINE_CODE.sub("", _prose(path.read_text(encoding="utf-8")))
    return [
        target
        for target in _LINK.findall(text)
        if not re.match(r"^[a-z][a-z0-9+.-]*:", target, re.IGNORECASE)  # http:, mailto:, ...
    ]


def broken_links(path: Path, root: Path = ROOT) -> list[str]:
    broken = []
    for link in relative_links(path):
        file_part, _, anchor = link.partition("#")
        target = (path.parent / file_part).resolve() if file_part else path
        shown = f"{path.relative_to(root)}: {link}"
        if not target.exists():
            broken.append(f"{shown} (no such file)")
            continue
        if anchor and target.suffix == ".md" and anchor not in anchors(target):
            broken.append(f"{shown} (no such heading in {target.relative_to(root)})")
    return broken


def test_the_readme_is_at_most_12_kb() -> None:
    size = len((ROOT / "README.md").read_bytes())
    assert size <= README_LIMIT_BYTES, (
        f"README.md is {size} bytes: keep it for the first-time admin and move the rest to docs/"
    )


@pytest.mark.parametrize("path", documents(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_points_to_something_that_exists(path: Path) -> None:
    assert broken_links(path) == []


def test_the_link_check_finds_broken_links(tmp_path: Path) -> None:
    """The check above would pass on documents without links: show it catches each kind."""
    (tmp_path / "other.md").write_text("# A heading\n", encoding="utf-8")
    page = tmp_path / "page.md"
    page.write_text(
        "# Top\n[ok](other.md#a-heading) [gone](missing.md) [bad](other.md#nope)\n"
        "[self](#top) [web](https://example.com) [multi\nline](#nowhere)\n"
        "```\n[in code](ignored.md)\n```\n",
        encoding="utf-8",
    )
    assert broken_links(page, root=tmp_path) == [
        "page.md: missing.md (no such file)",
        "page.md: other.md#nope (no such heading in other.md)",
        "page.md: #nowhere (no such heading in page.md)",
    ]


def test_headings_get_githubs_anchors() -> None:
    assert github_anchor("The `fluxcord` command (for the admin)") == (
        "the-fluxcord-command-for-the-admin"
    )
    assert github_anchor("When Discord won't take a result") == "when-discord-wont-take-a-result"
    assert github_anchor("Capacity, several processes and shutdown") == (
        "capacity-several-processes-and-shutdown"
    )


def test_every_metric_the_bot_exports_is_documented() -> None:
    from bot.operations.metrics import Metrics

    docs = " ".join(path.read_text(encoding="utf-8") for path in documents())
    exported = {
        family.name
        for family in Metrics(process_metrics=False).registry.collect()
        if family.name.startswith("fluxcord_")
    }
    assert exported, "no metric found: the check would pass on nothing"
    # A counter `x` is exposed as `x_total`; the docs may name either.
    undocumented = sorted(name for name in exported if name not in docs)
    assert undocumented == [], "name each in docs/operations.md (or docs/health.md)"
