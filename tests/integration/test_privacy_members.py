"""A member's export and erasure (bot/privacy/members.py) on either engine, below the Discord
layer: the file's bound, and what erasing reaches beyond jobs."""

from __future__ import annotations

import json

import pytest

from bot.jobs.models import JobState
from bot.privacy.batches import PROMPT_REMOVED
from bot.privacy.members import MemberData
from bot.servers.audit import AuditLog
from bot.storage.db import Database
from tests.conftest import EngineFactory, make_request
from tests.integration.test_privacy_purge import NOW, Clock, approval, audit, finished_job, strike


def member_data(db: Database, max_bytes: int = 8 * 1024 * 1024) -> MemberData:
    return MemberData(
        db, AuditLog(db, audit_channel=lambda _: None), clock=Clock(), max_bytes=max_bytes
    )


@pytest.mark.parametrize("max_bytes", [1500, 3000, 7000, 20000])
async def test_the_file_never_passes_its_bound_and_counts_what_it_left_out(
    db: Database, make_engine: EngineFactory, max_bytes: int
) -> None:
    engine = await make_engine(start=False)
    for n in range(12):
        # Multi-byte text: the bound is in bytes, not characters.
        await finished_job(engine, f"café crème n°{n} 🌅" * 3, finished_at=NOW - n)
        await strike(db, NOW - n, f"refusé n°{n} 🚫")

    export = await member_data(db, max_bytes).export(1001)

    assert len(export.data) <= max_bytes
    document = json.loads(export.data)
    for section, total in (("jobs", 12), ("ledger", 12), ("strikes", 12)):
        assert len(document[section]) + document["omitted"].get(section, 0) == total
    assert document["omitted"] == export.omitted


async def test_erasing_reaches_strikes_approvals_direct_messages_and_spares_running_requests(
    db: Database, make_engine: EngineFactory
) -> None:
    engine = await make_engine(start=False)
    in_dms = make_request("said in private")
    in_dms = type(in_dms)(**{**in_dms.__dict__, "guild_id": None})
    dm_job = await engine.store.create(in_dms, estimated_cost=3)
    await engine.store.transition(
        dm_job.id, from_states=[JobState.QUEUED], to=JobState.DELIVERED, finished_at=NOW, closed=1
    )
    running = await engine.store.create(make_request("still being made"), estimated_cost=3)
    someone_else = await finished_job(engine, "not mine", finished_at=NOW, user_id=2002)
    await strike(db, NOW, "a refused idea")
    await approval(db, "e" * 16, NOW, "a reviewed idea")
    await approval(db, "f" * 16, NOW, "a waiting idea", state="pending")
    await audit(db, NOW, "prompt refused", "hit banned term `x` in: a refused idea")
    await audit(db, NOW, "unblocked", "<@1001>; strikes cleared")

    erasure = await member_data(db).erase(1001)

    assert (erasure.prompts, erasure.strikes, erasure.audit_entries, erasure.approvals) == (
        1,
        1,
        1,
        1,
    )
    assert erasure.images == 1  # the reviewed approval's image
    assert erasure.unfinished == 2  # the running request and the waiting approval
    assert (await engine.store.require(dm_job.id)).prompt_removed
    assert (await engine.store.require(running.id)).prompt == "still being made"
    assert (await engine.store.require(someone_else.id)).prompt == "not mine"
    assert [r[0] for r in await db.fetch_all("SELECT prompt FROM strikes")] == [PROMPT_REMOVED]
    details = [
        r[0]
        for r in await db.fetch_all(
            "SELECT detail FROM audit_log WHERE action <> 'privacy delete' ORDER BY id"
        )
    ]
    assert details == [PROMPT_REMOVED, "<@1001>; strikes cleared"]
    requests = [
        json.loads(r[0]) for r in await db.fetch_all("SELECT request FROM approvals ORDER BY id")
    ]
    assert [r["params"]["prompt"] for r in requests] == ["", "a waiting idea"]
    # Erasing again finds nothing more, and says so on the record.
    again = await member_data(db).erase(1001)
    assert (again.prompts, again.images, again.strikes, again.audit_entries) == (0, 0, 0, 0)
    assert (
        await db.fetch_value(
            "SELECT count(*) FROM audit_log WHERE action = 'privacy delete' AND guild_id = 0"
        )
        == 2
    )
