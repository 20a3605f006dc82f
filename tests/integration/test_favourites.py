"""Favourites and showcase claims (bot/community/favourites.py) on either engine, below the
Discord layer: who sees which favourite from where, pages, sharing once (with a crashed
claim taken over), and the member's export, erasure and the retention purge."""

from __future__ import annotations

import json

import pytest

import bot.community.favourites as favourites_module
from bot.community.favourites import (
    CLAIM_SECONDS,
    AlreadyShared,
    Claim,
    Favourites,
    Scope,
    Showcase,
)
from bot.errors import InvalidRequest
from bot.privacy.members import MemberData
from bot.privacy.retention import DAY, Retention, RetentionPolicy
from bot.servers.audit import AuditLog
from bot.storage.db import Database
from tests.conftest import EngineFactory
from tests.integration.test_privacy_purge import GUILD, NOW, OTHER_GUILD, Clock, finished_job

ME, SOMEONE = 1001, 2002


async def test_a_listing_shows_the_servers_results_and_in_dms_everything_of_mine(
    db: Database, make_engine: EngineFactory
) -> None:
    engine = await make_engine(start=False)
    here = await finished_job(engine, "here", finished_at=NOW, user_id=SOMEONE)
    elsewhere = await finished_job(
        engine, "elsewhere", finished_at=NOW, user_id=SOMEONE, guild_id=OTHER_GUILD
    )
    my_dm = await finished_job(engine, "my dm", finished_at=NOW, guild_id=None)  # type: ignore[arg-type]
    their_dm = await finished_job(
        engine,
        "their dm",
        finished_at=NOW,
        user_id=SOMEONE,
        guild_id=None,  # type: ignore[arg-type]
    )
    clock = Clock()
    favourites = Favourites(db, clock=clock)
    for job in (here, elsewhere, my_dm, their_dm):  # (the buttons never allow the last one)
        clock.now += 1
        assert await favourites.toggle(ME, job) is True

    in_server = await favourites.page(Scope(ME, GUILD), 0)
    in_dms = await favourites.page(Scope(ME, None), 0)
    theirs = await favourites.page(Scope(SOMEONE, GUILD), 0)

    assert [job.prompt for job in in_server.jobs] == ["here"]
    assert [job.prompt for job in in_dms.jobs] == ["my dm", "elsewhere", "here"]  # newest first
    assert theirs.jobs == []  # favourites are each member's own


async def test_pages_hold_ten_newest_first_and_a_second_click_removes(
    db: Database, make_engine: EngineFactory
) -> None:
    engine = await make_engine(start=False)
    clock = Clock()
    favourites = Favourites(db, clock=clock)
    jobs = []
    for n in range(12):
        jobs.append(await finished_job(engine, f"image {n}", finished_at=NOW))
        clock.now += 1
        await favourites.toggle(ME, jobs[-1])

    first = await favourites.page(Scope(ME, GUILD), 0)
    second = await favourites.page(Scope(ME, GUILD), 1)
    beyond = await favourites.page(Scope(ME, GUILD), 7)

    assert [j.prompt for j in first.jobs] == [f"image {n}" for n in range(11, 1, -1)]
    assert [j.prompt for j in second.jobs] == ["image 1", "image 0"]
    assert (second.page, second.pages, second.total) == (1, 2, 12)
    assert beyond.page == 1  # past the end: the last page
    assert await favourites.toggle(ME, jobs[0]) is False
    assert (await favourites.page(Scope(ME, GUILD), 0)).total == 11


async def test_a_member_keeps_at_most_the_cap(
    db: Database, make_engine: EngineFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(favourites_module, "MAX_FAVOURITES", 2)
    engine = await make_engine(start=False)
    favourites = Favourites(db, clock=Clock())
    jobs = [await finished_job(engine, f"image {n}", finished_at=NOW) for n in range(3)]
    await favourites.toggle(ME, jobs[0])
    await favourites.toggle(ME, jobs[1])

    with pytest.raises(InvalidRequest):
        await favourites.toggle(ME, jobs[2])

    assert (await favourites.page(Scope(ME, GUILD), 0)).total == 2
    assert await favourites.toggle(ME, jobs[1]) is False  # removing still works at the cap


def showcase(db: Database, clock: Clock) -> Showcase:
    return Showcase(db, AuditLog(db, audit_channel=lambda _: None), clock=clock)


async def test_a_result_is_claimed_once_and_posted_once_with_its_audit_entry(
    db: Database, make_engine: EngineFactory
) -> None:
    engine = await make_engine(start=False)
    job = await finished_job(engine, "a castle", finished_at=NOW)
    service = showcase(db, Clock())

    claim = await service.claim(job, 555, ME)
    racing = await service.claim(job, 555, SOMEONE)
    assert isinstance(claim, Claim)
    assert racing == AlreadyShared(555, None)  # being posted: not twice
    await service.posted(claim, job, ME, 9999)
    again = await service.claim(job, 555, SOMEONE)

    assert again == AlreadyShared(555, 9999)
    rows = await db.fetch_all("SELECT actor_id, target_id, job_id, detail FROM audit_log")
    assert [(r[0], r[1], r[2]) for r in rows] == [(ME, ME, job.id)]
    assert f"/{GUILD}/555/9999" in rows[0][3] and "a castle" not in rows[0][3]


async def test_a_claim_left_by_a_crash_is_taken_over_and_a_failed_post_released(
    db: Database, make_engine: EngineFactory
) -> None:
    engine = await make_engine(start=False)
    crashed = await finished_job(engine, "image 1", finished_at=NOW)
    failed = await finished_job(engine, "image 2", finished_at=NOW)
    clock = Clock()
    service = showcase(db, clock)
    assert isinstance(await service.claim(crashed, 555, ME), Claim)  # then the process died
    claim = await service.claim(failed, 555, ME)
    assert isinstance(claim, Claim)
    await service.release(claim)  # the post failed

    assert isinstance(await service.claim(failed, 555, ME), Claim)
    clock.now += CLAIM_SECONDS - 1
    assert await service.claim(crashed, 555, SOMEONE) == AlreadyShared(555, None)
    clock.now += 2
    assert isinstance(await service.claim(crashed, 555, SOMEONE), Claim)


async def test_export_and_erasure_cover_favourites_and_purged_jobs_take_theirs(
    db: Database, make_engine: EngineFactory
) -> None:
    engine = await make_engine(start=False)
    old = await finished_job(engine, "old", finished_at=NOW - 3 * DAY)
    recent = await finished_job(engine, "recent", finished_at=NOW)
    other_server = await finished_job(engine, "away", finished_at=NOW, guild_id=OTHER_GUILD)
    favourites = Favourites(db, clock=Clock())
    for job in (old, recent, other_server):
        await favourites.toggle(ME, job)
        await favourites.toggle(SOMEONE, job)
    shared = showcase(db, Clock())
    claim = await shared.claim(recent, 555, ME)
    assert isinstance(claim, Claim)
    await shared.posted(claim, recent, ME, 9999)
    data = MemberData(db, AuditLog(db, audit_channel=lambda _: None), clock=Clock())

    document = json.loads((await data.export(ME)).data)
    assert {row["job_id"] for row in document["favourites"]} == {
        old.id,
        recent.id,
        other_server.id,
    }
    assert [row["message_id"] for row in document["showcase_shares"]] == [9999]

    retention = Retention(db, RetentionPolicy(finished_jobs=2 * DAY), clock=Clock())
    report = await retention.purge(NOW)
    assert report.counts["finished jobs deleted"] == 1
    assert (await favourites.page(Scope(SOMEONE, GUILD), 0)).total == 1  # "old" went with it

    erasure = await data.erase(ME)
    assert erasure.favourites == 2
    assert (await favourites.page(Scope(ME, None), 0)).total == 0
    assert (await favourites.page(Scope(SOMEONE, None), 0)).total == 2  # theirs stay

    await retention.left(OTHER_GUILD)
    await retention.erase_server(OTHER_GUILD)
    assert [j.id for j in (await favourites.page(Scope(SOMEONE, None), 0)).jobs] == [recent.id]
