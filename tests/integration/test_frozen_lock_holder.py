"""A process frozen in the middle of a statement while it holds a fleet-wide lock (a paused
VM): no server timeout frees it, so the other processes end its session (issue 22, found by
tests/e2e/test_fleet_frozen_process.py under load)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from bot.storage.db import Database
from tests.postgres_fixtures import on_postgres
from tests.postgres_server import PostgresServer

pytestmark = pytest.mark.skipif(not on_postgres(), reason="sessions of other processes")

LOCK = 4242


async def test_a_session_frozen_mid_statement_holding_a_lock_is_cut_off(
    db: Database, database_target: str | Path, postgres_server: PostgresServer
) -> None:
    frozen = await asyncpg.connect(str(database_target))
    stuck: asyncio.Task[Any] | None = None
    try:
        await frozen.execute("BEGIN")
        await frozen.execute("SELECT pg_advisory_xact_lock($1)", LOCK)
        prepared = asyncio.Event()

        async def frozen_before_execute(*args: Any, **kwargs: Any) -> None:
            # asyncpg has prepared the statement (the server waits for its Bind/Execute):
            # the process is paused right here.
            prepared.set()
            await asyncio.Event().wait()

        frozen._protocol.bind_execute = frozen_before_execute  # type: ignore[attr-defined]
        stuck = asyncio.create_task(frozen.fetch("SELECT 1 + $1::int", 1))
        await asyncio.wait_for(prepared.wait(), 10)
        pid = frozen.get_server_pid()
        activity = "SELECT state FROM pg_stat_activity WHERE pid = ?"
        # In the middle of a statement, so no server timeout frees the lock. (It shows as
        # waiting for its client a moment after answering the prepare.)
        assert await db.fetch_value(activity, (pid,)) == "active"

        # Not yet frozen for long: a live process may be between two messages.
        assert await db.cut_off_frozen_lock_holders(older_than=60) == 0
        assert await db.fetch_value("SELECT pg_try_advisory_xact_lock(?)", (LOCK,)) is False

        await asyncio.sleep(0.3)  # the session has now waited this long for its client
        ended = asyncio.Event()
        frozen.add_termination_listener(lambda _connection: ended.set())
        with postgres_server.expect_error("terminating connection due to administrator command"):
            assert await db.cut_off_frozen_lock_holders(older_than=0.2) == 1
            await asyncio.wait_for(ended.wait(), 10)
        # The lock is free: taking it waits (within lock_timeout) only for the ending session.
        await db.fetch_value("SELECT pg_advisory_xact_lock(?)", (LOCK,))
    finally:
        if stuck is not None:
            stuck.cancel()
        frozen.terminate()
