"""Which failures are the database being unreachable for a while (bot/storage/outage.py)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from bot.storage import sqlite as sqlite_storage
from bot.storage.db import open_database
from bot.storage.outage import is_database_outage, is_outage


@pytest.mark.parametrize(
    ("exc", "passing"),
    [
        (sqlite3.OperationalError("database is locked"), True),
        (sqlite3.OperationalError("no such table: jobs"), False),
        (ConnectionRefusedError(), True),
        (ValueError("a bug"), False),
    ],
)
def test_sqlite_and_network_failures(exc: Exception, passing: bool) -> None:
    assert is_outage(exc) is passing


def test_a_session_the_server_ended_while_the_process_was_paused_is_passing() -> None:
    asyncpg = pytest.importorskip("asyncpg")
    # What asyncpg says on the call after a SIGSTOP outlasted idle_in_transaction_session_timeout
    # (seen in tests/e2e/test_fleet_frozen_process.py): the same call later succeeds.
    paused = asyncpg.InternalClientError(
        "cannot switch to state 15; another operation (2) is in progress"
    )
    assert is_outage(paused)
    assert is_outage(asyncpg.InterfaceError("the underlying connection is closed"))
    assert not is_outage(asyncpg.InterfaceError("the pool is closing"))


async def test_only_what_the_store_met_counts_as_the_database_being_down(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A periodic chore that also talks to Discord must still log a refused connection to
    Discord as an error: only failures a store call met are the database's outage."""
    refused = ConnectionRefusedError("discord.com refused")
    assert is_outage(refused) and not is_database_outage(refused)
    monkeypatch.setattr(sqlite_storage, "BUSY_TIMEOUT_MS", 0)  # locked: fail at once
    db = await open_database(tmp_path / "locked.sqlite3")
    other = sqlite3.connect(tmp_path / "locked.sqlite3", isolation_level=None)
    try:
        other.execute("BEGIN EXCLUSIVE")
        with pytest.raises(sqlite3.OperationalError) as raised:
            await db.execute("INSERT INTO app_state (key, value) VALUES ('k', 'v')")
        assert is_database_outage(raised.value)
        assert db.outage.down
    finally:
        other.execute("ROLLBACK")
        other.close()
        await db.close()
