"""Publishing a private result, in the store: two processes pressing Publish at the same
moment post it once, and a failed post can be tried again (both engines)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest

from bot.community.publications import (
    NOT_PRIVATE_TEXT,
    NOT_YOURS_TEXT,
    PUBLISHING_NOW_TEXT,
    AlreadyPublished,
    Publications,
)
from bot.errors import InvalidRequest
from bot.jobs.models import Job
from bot.jobs.store import JobStore
from bot.servers.audit import AuditLog
from bot.storage.db import Database, open_database
from tests.conftest import make_request

ALICE, BOB = 1001, 1002


@pytest.fixture
async def two_processes(database_target: str | Path) -> AsyncIterator[tuple[Database, Database]]:
    """Two connections to one store, as two bot processes hold them."""
    first = await open_database(database_target)
    second = await open_database(database_target, migrate=False)
    yield first, second
    await second.close()
    await first.close()


def publications(db: Database) -> Publications:
    return Publications(JobStore(db, time.time), AuditLog(db, audit_channel=lambda _: None))


async def delivered_private_job(db: Database) -> Job:
    store = JobStore(db, time.time)
    job = await store.create(
        replace(make_request("a lantern", user_id=ALICE), private=True), estimated_cost=3.0
    )
    await db.execute(
        "UPDATE jobs SET state = 'delivered', closed = 1, result_message_id = 5 WHERE id = ?",
        (job.id,),
    )
    return await store.require(job.id)


async def test_two_processes_pressing_publish_at_once_post_it_once(
    two_processes: tuple[Database, Database],
) -> None:
    first_db, second_db = two_processes
    job = await delivered_private_job(first_db)
    assert job.private and job.unpublished_private
    first, second = publications(first_db), publications(second_db)

    outcomes = await asyncio.gather(
        first.claim(job, ALICE), second.claim(job, ALICE), return_exceptions=True
    )
    winners = [o for o in outcomes if isinstance(o, Job)]
    losers = [o for o in outcomes if isinstance(o, InvalidRequest)]
    assert len(winners) == 1 and len(losers) == 1, outcomes
    assert str(losers[0]) == PUBLISHING_NOW_TEXT

    published = await first.published(winners[0], 777)
    assert published.published_message_id == published.result_message_id == 777
    assert not published.unpublished_private
    with pytest.raises(AlreadyPublished) as again:
        await second.claim(job, ALICE)
    assert again.value.job.published_message_id == 777
    actions = await first_db.fetch_all("SELECT action, job_id, target_id FROM audit_log")
    assert [(r["action"], r["job_id"], r["target_id"]) for r in actions] == [
        ("published", job.id, ALICE)
    ]


async def test_a_failed_post_releases_the_claim_and_only_its_member_may_publish(
    db: Database,
) -> None:
    job = await delivered_private_job(db)
    publish = publications(db)
    with pytest.raises(InvalidRequest, match=NOT_YOURS_TEXT):
        await publish.claim(job, BOB)
    with pytest.raises(InvalidRequest, match=NOT_PRIVATE_TEXT):
        await publish.claim(replace(job, private=False), ALICE)

    claimed = await publish.claim(job, ALICE)
    await publish.release(claimed)  # Discord refused the post: nothing is public
    again = await publish.claim(job, ALICE)
    assert (await publish.published(again, 778)).published_message_id == 778
    assert await db.fetch_value("SELECT count(*) FROM audit_log") == 1
