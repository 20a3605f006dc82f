"""A job's webhook secret is kept only while the job is open: closing it erases the secret,
and a late duplicate delivery for it still gets a calm 200 that changes nothing."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from bot.jobs.models import JobState
from bot.storage.db import Database, open_database
from bot.storage.migrations import apply_migrations, discover, migrations_dir
from tests.conftest import make_request
from tests.fakes.bfl_server import FakeBFL, Outcome
from tests.integration.test_engine_webhooks import Rig, build_rig
from tests.postgres_fixtures import DsnFactory, on_postgres


@pytest.fixture
async def rig(db: Database, fake_bfl: FakeBFL) -> AsyncIterator[Rig]:
    async for built in build_rig(db, fake_bfl, grace=5.0):
        yield built


async def stored_secret(db: Database, job_id: str) -> str | None:
    secret: str | None = await db.fetch_value(
        "SELECT webhook_secret FROM jobs WHERE id = ?", (job_id,)
    )
    return secret


async def test_a_delivered_job_keeps_no_webhook_secret(rig: Rig, db: Database) -> None:
    job, _ = await rig.engine.accept(make_request("hooked"))
    [final] = await rig.engine.wait_closed([job.id], 5)
    assert final.state is JobState.DELIVERED
    [submission] = rig.bfl.submissions
    assert len(submission.body["webhook_secret"]) >= 32  # it had one while it ran
    assert await stored_secret(db, job.id) is None
    assert final.webhook_secret is None


async def test_a_failed_job_keeps_no_webhook_secret(rig: Rig, db: Database) -> None:
    rig.bfl.script("blocked", Outcome(final_status="Request Moderated"))
    job, _ = await rig.engine.accept(make_request("blocked"))
    [final] = await rig.engine.wait_closed([job.id], 5)
    assert (final.state, final.closed) == (JobState.MODERATED, True)
    assert rig.bfl.submissions[0].body["webhook_secret"]
    assert await stored_secret(db, job.id) is None


async def test_a_late_duplicate_for_a_closed_job_gets_200_and_changes_nothing(
    rig: Rig, db: Database
) -> None:
    job, _ = await rig.engine.accept(make_request("hooked"))
    [final] = await rig.engine.wait_closed([job.id], 5)
    [delivery] = rig.bfl.webhook_attempts
    assert delivery.status_code == 200
    async with (
        aiohttp.ClientSession() as session,
        session.post(delivery.url, data=delivery.body, headers=delivery.headers) as answer,
    ):
        assert answer.status == 200  # calm: BFL has no reason to send it again
    assert await rig.engine.store.require(job.id) == final
    assert rig.notifier.deliver_calls == {job.id: 1}
    assert await stored_secret(db, job.id) is None


async def test_the_migration_erases_secrets_that_closed_jobs_kept(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Rows closed before closing erased the secret lose it when the bot is upgraded."""
    backend = "postgres" if on_postgres() else "sqlite"
    target: str | Path = tmp_path / "old.sqlite3"
    if on_postgres():
        make: DsnFactory = request.getfixturevalue("postgres_dsn_factory")
        target = make(migrated=False)
    earlier = tmp_path / "earlier"
    earlier.mkdir()
    for migration in discover(migrations_dir(backend)):
        if migration.version < 11:
            (earlier / migration.name).write_text(migration.sql)
    db = await open_database(target, migrate=False)
    try:
        await apply_migrations(db, earlier)
        for job_id, closed in (("ended", 1), ("running", 0)):
            await db.execute(
                "INSERT INTO jobs (id, created_at, updated_at, channel_id, user_id, variant,"
                " provider, prompt, params, state, estimated_cost, closed, webhook_secret,"
                " interaction_token) VALUES (?, 0, 0, 1, 2, 'pro', 'bfl', 'p', '{}',"
                " 'submitted', 1, ?, ?, ?)",
                (job_id, closed, f"secret-{job_id}", f"token-{job_id}"),
            )
        await apply_migrations(db)
        rows = await db.fetch_all(
            "SELECT id, webhook_secret, interaction_token FROM jobs ORDER BY id"
        )
        assert [tuple(row) for row in rows] == [
            ("ended", None, None),
            ("running", "secret-running", "token-running"),
        ]
    finally:
        await db.close()
