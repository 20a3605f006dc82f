"""The /prefer store on either engine: changes checked before anything is written, one field
cleared at a time, changes at the same moment both kept, and the member's export and erasure
reaching the row."""

from __future__ import annotations

import asyncio
import contextlib
import json
from contextlib import AsyncExitStack

import pytest

from bot.catalogue import CATALOGUE
from bot.errors import InvalidRequest
from bot.invalidation import Cache, SharedCaches
from bot.members import MemberPreferences, PreferenceField, Preferences
from bot.moderation.strikes import Moderation
from bot.privacy.members import MemberData
from bot.servers.audit import AuditLog
from bot.servers.settings import SettingsStore
from bot.storage.db import Database, open_database
from tests.postgres_fixtures import DsnFactory, on_postgres

GUILD, MOD, ALICE, BOB = 10, 20, 1001, 2002
KEYS = ("pro", "flex", "klein-4b")
F = PreferenceField


def store(db: Database) -> tuple[Preferences, Moderation]:
    audit = AuditLog(db, audit_channel=lambda _: None)
    settings = SettingsStore(db, audit, known_variants=lambda: KEYS)
    moderation = Moderation(db, audit, settings=settings.get)
    variants = {key: CATALOGUE[key] for key in KEYS}
    return Preferences(db, variants, moderation=moderation, clock=lambda: 1000.0), moderation


async def rows(db: Database) -> list[tuple[object, ...]]:
    return [tuple(r) for r in await db.fetch_all("SELECT * FROM member_preferences")]


async def test_a_member_sets_several_defaults_and_clears_them_one_at_a_time(db: Database) -> None:
    preferences, _ = store(db)
    assert await preferences.get(ALICE) == MemberPreferences(ALICE)

    saved = await preferences.set(
        ALICE,
        {
            F.VARIANT: "flex",
            F.SIZE: "Landscape 16 9",
            F.PROMPT_SUFFIX: "  oil\npaint ",
            F.PRIVATE: True,
        },
        guild_id=GUILD,
    )
    assert saved == MemberPreferences(
        ALICE, variant="flex", size="landscape_16_9", prompt_suffix="oil paint", private=True
    )
    assert await preferences.get(ALICE) == saved
    assert await preferences.get(BOB) == MemberPreferences(BOB)  # per member

    await preferences.set(ALICE, {F.SIZE: "1024 × 768", F.PROMPT_UPSAMPLING: False}, guild_id=None)
    after = await preferences.get(ALICE)
    assert (after.size, after.prompt_upsampling, after.variant) == ("1024x768", False, "flex")

    cleared = await preferences.clear(ALICE, F.PRIVATE)
    assert cleared.private is False and cleared.variant == "flex"
    await preferences.clear(ALICE, None)
    assert await preferences.get(ALICE) == MemberPreferences(ALICE)
    assert await rows(db) == []  # nothing left to keep: no row


@pytest.mark.parametrize(
    ("changes", "refusal"),
    [
        ({F.VARIANT: "turbo"}, "There is no model called “turbo” on this bot."),
        ({F.SIZE: "huge"}, "or as WIDTHxHEIGHT, for example 1024x768."),
        ({F.SIZE: "1000x1000"}, "The width must be a multiple of 16 (got 1000)."),
        ({F.PROMPT_SUFFIX: "x" * 301}, "The prompt suffix is 301 characters; the most is 300."),
        ({F.PROMPT_SUFFIX: "   "}, "The prompt suffix is empty."),
        ({F.PROMPT_SUFFIX: "with a gore scene"}, "contains a term that isn't allowed here"),
        ({F.PROMPT_UPSAMPLING: True, F.VARIANT: "nope"}, "no model called “nope”"),
        ({}, "Choose at least one default to set."),
    ],
)
async def test_an_invalid_change_is_refused_by_name_and_changes_nothing(
    db: Database, changes: dict[PreferenceField, object], refusal: str
) -> None:
    preferences, moderation = store(db)
    await moderation.add_term(GUILD, MOD, "gore", is_regex=False)
    before = await preferences.set(
        ALICE, {F.VARIANT: "pro", F.PROMPT_SUFFIX: "soft"}, guild_id=GUILD
    )
    stored = await rows(db)

    # With a valid change beside it: that one is not kept either.
    wanted = {**changes, F.PRIVATE: True} if changes else {}
    with pytest.raises(InvalidRequest) as raised:
        await preferences.set(ALICE, wanted, guild_id=GUILD)

    assert refusal in str(raised.value) and str(raised.value).endswith("Nothing was changed.")
    assert await preferences.get(ALICE) == before and await rows(db) == stored
    assert await moderation.strikes(GUILD, ALICE) == []  # checking a suffix is no strike


async def test_changes_at_the_same_moment_are_both_kept(db: Database) -> None:
    preferences, _ = store(db)
    await asyncio.gather(
        preferences.set(ALICE, {F.VARIANT: "flex"}, guild_id=GUILD),
        preferences.set(ALICE, {F.PROMPT_SUFFIX: "at dusk"}, guild_id=GUILD),
        preferences.set(ALICE, {F.PRIVATE: True}, guild_id=GUILD),
    )
    assert await preferences.get(ALICE) == MemberPreferences(
        ALICE, variant="flex", prompt_suffix="at dusk", private=True
    )


async def test_the_members_export_has_their_defaults_and_erasing_removes_them(
    db: Database,
) -> None:
    preferences, _ = store(db)
    await preferences.set(ALICE, {F.PROMPT_SUFFIX: "my style", F.PRIVATE: True}, guild_id=None)
    await preferences.set(BOB, {F.VARIANT: "pro"}, guild_id=None)
    audit = AuditLog(db, audit_channel=lambda _: None)
    data = MemberData(db, audit, clock=lambda: 2000.0, preferences=preferences)

    document = json.loads((await data.export(ALICE)).data)
    assert document["preferences"] == [
        {
            "variant": None,
            "size": None,
            "prompt_suffix": "my style",
            "prompt_upsampling": None,
            "private": True,
            "updated_at": "1970-01-01T00:16:40+00:00",
        }
    ]

    erasure = await data.erase(ALICE)
    assert erasure.preferences == 1 and "your /prefer defaults" in erasure.summary
    assert await preferences.get(ALICE) == MemberPreferences(ALICE)
    assert (await preferences.get(BOB)).variant == "pro"  # someone else's stay


async def test_a_process_keeps_defaults_in_memory_until_told_they_changed(db: Database) -> None:
    here, _ = store(db)
    elsewhere, _ = store(db)  # another process on the same store
    assert await here.get(ALICE) == MemberPreferences(ALICE)  # kept: no defaults
    await elsewhere.set(ALICE, {F.VARIANT: "flex"}, guild_id=None)
    assert await here.get(ALICE) == MemberPreferences(ALICE)  # no trip to the store
    await here.forget_all()  # what the change's notice does (bot/invalidation.py)
    assert (await here.get(ALICE)).variant == "flex"
    await here.set(ALICE, {F.VARIANT: "pro"}, guild_id=None)
    assert (await here.get(ALICE)).variant == "pro"  # its own change at once


async def test_erasing_the_members_data_empties_what_the_store_kept(db: Database) -> None:
    preferences, _ = store(db)
    await preferences.set(ALICE, {F.PROMPT_SUFFIX: "my style"}, guild_id=None)
    assert (await preferences.get(ALICE)).prompt_suffix == "my style"
    audit = AuditLog(db, audit_channel=lambda _: None)
    data = MemberData(db, audit, clock=lambda: 2000.0, preferences=preferences)
    await data.erase(ALICE)
    assert await preferences.get(ALICE) == MemberPreferences(ALICE)


@pytest.mark.skipif(not on_postgres(), reason="several processes need PostgreSQL")
async def test_a_change_in_one_process_reaches_the_others(
    postgres_dsn_factory: DsnFactory,
) -> None:
    dsn = postgres_dsn_factory()
    async with AsyncExitStack() as stack:
        here_db, there_db = [await open_database(dsn) for _ in range(2)]
        stack.push_async_callback(here_db.close)
        stack.push_async_callback(there_db.close)
        here, _ = store(here_db)
        there, _ = store(there_db)
        told = asyncio.Event()

        async def forget() -> None:
            await there.forget_all()
            told.set()

        caches = SharedCaches(there_db)
        caches.register(Cache.MEMBER_PREFERENCES, forget)
        await caches.start()
        stack.push_async_callback(caches.stop)
        assert await there.get(ALICE) == MemberPreferences(ALICE)

        # Until the other process listens, a notice may pass it by: say it again until heard.
        for variant in ["flex", "pro"] * 25:
            await here.set(ALICE, {F.VARIANT: variant}, guild_id=None)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(told.wait(), 0.2)
                break
        assert told.is_set()
        assert await there.get(ALICE) == await here.get(ALICE)
