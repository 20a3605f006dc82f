"""Which failures are the database being unreachable for a while (bot/storage/outage.py)."""

from __future__ import annotations

import sqlite3

import pytest

from bot.storage.outage import is_outage


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
