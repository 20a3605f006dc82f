"""A server's banned terms share a size budget, and checking them costs what that budget
allows, one check at a time per server: what moderators are told when a term doesn't fit,
what happens to terms stored over the budget, and that one server's checks never hold
another's."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import pytest

from bot.errors import InvalidRequest
from bot.moderation import strikes
from bot.moderation.strikes import BUSY_TEXT, Moderation, PromptRefused
from bot.moderation.terms import DEFAULT_TERMS, BannedTerm, TermHit, TermMatcher
from bot.servers.audit import AuditLog
from bot.servers.settings import SettingsStore
from bot.storage.db import open_database

GUILD, OTHER_GUILD, MOD, ALICE = 10, 11, 20, 30


def size_of(*patterns: str, regex: bool = False) -> int:
    return TermMatcher([*DEFAULT_TERMS, *(BannedTerm(p, regex, "server") for p in patterns)]).size


BUDGET = size_of("dragon", "wyrm")  # room for exactly these two words


@pytest.fixture
async def core() -> AsyncIterator[Any]:
    db = await open_database(":memory:")
    audit = AuditLog(db, audit_channel=lambda guild: None)
    settings = SettingsStore(db, audit, known_variants=lambda: ("pro",))
    moderation = Moderation(db, audit, settings=settings.get, terms_size_budget=BUDGET)
    yield SimpleNamespace(db=db, moderation=moderation)
    await db.close()


async def store_term(core: Any, pattern: str, *, is_regex: bool = False) -> None:
    """As an older version, or a larger budget, left it in the database."""
    await core.db.execute(
        "INSERT INTO banned_terms (guild_id, pattern, is_regex, added_by, added_at)"
        " VALUES (?,?,?,?,?)",
        (GUILD, pattern, int(is_regex), MOD, 0.0),
    )


async def test_a_term_that_does_not_fit_the_budget_is_refused_and_says_why(core: Any) -> None:
    await core.moderation.add_term(GUILD, MOD, "dragon", is_regex=False)
    with pytest.raises(InvalidRequest) as raised:
        await core.moderation.add_term(GUILD, MOD, ".{50}", is_regex=True)
    needed = size_of("dragon") + size_of(".{50}", regex=True)
    assert str(raised.value) == (
        "That regular expression would take this server's banned terms over their size budget:"
        f" with it they would need {needed:,} of the {BUDGET} allowed (now {size_of('dragon')})."
        " Every prompt is checked against all of a server's terms, so what they take together"
        " is limited to keep that quick for everyone. Remove terms you no longer need with"
        " /settings terms-remove, or write a smaller one: a count such as {50} repeats what"
        " comes before it that many times, and `.` or a class such as [^x] takes more than a"
        " plain letter."
    )
    assert await core.db.fetch_value("SELECT count(*) FROM banned_terms") == 1
    assert await core.db.fetch_value("SELECT count(*) FROM audit_log") == 1  # the first add
    await core.moderation.add_term(GUILD, MOD, "wyrm", is_regex=False)  # exactly fits
    with pytest.raises(InvalidRequest, match=f"they would need [0-9]+ of the {BUDGET} allowed"):
        await core.moderation.add_term(GUILD, MOD, "orc", is_regex=False)
    await core.moderation.add_term(OTHER_GUILD, MOD, "orc", is_regex=False)  # per server
    await core.moderation.remove_term(GUILD, MOD, "wyrm")
    await core.moderation.add_term(GUILD, MOD, "orc", is_regex=False)  # room again


async def test_terms_stored_over_the_budget_are_left_out_and_the_moderator_is_told(
    core: Any, caplog: pytest.LogCaptureFixture
) -> None:
    for pattern in ("dragon", "wyrm", "x{300}", "orc"):
        await store_term(core, pattern, is_regex=pattern.startswith("x{"))
    with caplog.at_level(logging.WARNING, logger="bot.moderation.strikes"):
        await core.moderation.load()
        # The oldest that fit are in force; from the first that doesn't, none are.
        for prompt in ("a dragon", "a wyrm"):
            with pytest.raises(PromptRefused):
                await core.moderation.check_prompt(GUILD, ALICE, prompt)
        assert await core.moderation.first_hit(GUILD, "x" * 300) is None
        assert await core.moderation.first_hit(GUILD, "an orc") is None
        await core.moderation.load()  # another process changed something: no second warning
        await core.moderation.first_hit(GUILD, "an orc")
    assert [r.getMessage() for r in caplog.records] == [
        f"2 banned terms of server {GUILD} not in force: with the older ones they are over the"
        f" server's size budget of {BUDGET} (ids 3, 4)"
    ]
    left_out = await core.moderation.terms_not_in_force(GUILD)
    assert [t.pattern for t in left_out] == ["x{300}", "orc"]
    # Still listed, so a moderator can remove them; adding one says why it can't be.
    assert len(core.moderation.server_terms(GUILD)) == 4
    with pytest.raises(InvalidRequest) as raised:
        await core.moderation.add_term(GUILD, MOD, "elf", is_regex=False)
    assert str(raised.value) == (
        "This server's banned terms are already over their size budget: 2 newer terms are left"
        " out, not in force (stored before the budget, or when it was larger). Every prompt is"
        " checked against all of a server's terms, so what they take together is limited to"
        " keep that quick for everyone. Remove terms you no longer need with /settings"
        " terms-remove to make room for them first."
    )
    await core.moderation.remove_term(GUILD, MOD, "x{300}")
    assert await core.moderation.terms_not_in_force(GUILD) == [BannedTerm("orc", False, "server")]
    await core.moderation.remove_term(GUILD, MOD, "wyrm")
    assert await core.moderation.terms_not_in_force(GUILD) == []
    assert await core.moderation.first_hit(GUILD, "an orc") is not None


async def test_one_servers_checks_run_one_at_a_time_and_never_hold_another_server(
    core: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    await core.moderation.add_term(GUILD, MOD, "dragon", is_regex=False)
    await core.moderation.add_term(OTHER_GUILD, MOD, "dragon", is_regex=False)
    release, started = threading.Event(), threading.Event()
    running: list[str] = []
    most_running = 0
    guard = threading.Lock()
    check = TermMatcher.first_hit

    def held(self: TermMatcher, prompt: str) -> TermHit | None:
        nonlocal most_running
        with guard:
            running.append(prompt)
            most_running = max(most_running, sum(p.startswith("held") for p in running))
        started.set()
        if prompt.startswith("held"):
            release.wait(10)
        try:
            return check(self, prompt)
        finally:
            with guard:
                running.remove(prompt)

    monkeypatch.setattr(TermMatcher, "first_hit", held)
    held_checks = [
        asyncio.create_task(core.moderation.first_hit(GUILD, f"held dragon {n}")) for n in range(3)
    ]
    assert await asyncio.to_thread(started.wait, 10)
    # The other server's check goes by while this one's first check is still running, and
    # the two after it have not started.
    hit = await core.moderation.first_hit(OTHER_GUILD, "a dragon")
    assert hit is not None and hit.term.pattern == "dragon"
    assert running == ["held dragon 0"]
    release.set()
    assert all(hit is not None for hit in await asyncio.gather(*held_checks))
    assert most_running == 1


async def test_a_check_that_cannot_start_soon_is_refused_as_busy_without_a_strike(
    core: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(strikes, "CHECK_QUEUE_SECONDS", 0.05)
    await core.moderation.add_term(GUILD, MOD, "dragon", is_regex=False)
    release, started = threading.Event(), threading.Event()
    check = TermMatcher.first_hit

    def held(self: TermMatcher, prompt: str) -> TermHit | None:
        started.set()
        release.wait(10)
        return check(self, prompt)

    monkeypatch.setattr(TermMatcher, "first_hit", held)
    running = asyncio.create_task(core.moderation.check_prompt(GUILD, ALICE, "a dragon"))
    assert await asyncio.to_thread(started.wait, 10)
    with pytest.raises(InvalidRequest) as raised:
        await core.moderation.check_prompt(GUILD, ALICE, "another dragon")
    assert str(raised.value) == BUSY_TEXT
    assert not isinstance(raised.value, PromptRefused)
    # The check that had started is not abandoned: it finishes, and its hit counts.
    release.set()
    with pytest.raises(PromptRefused):
        await running
    assert await core.db.fetch_value("SELECT count(*) FROM strikes") == 1
