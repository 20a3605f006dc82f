"""Fixtures choosing the store the tests run on: SQLite by default, PostgreSQL with
FLUXCORD_TEST_DATABASE=postgres (CI runs the suite both ways).

One PostgreSQL server serves the whole session; each test gets a fresh database copied
from a template that already holds the migrated schema (copying is far quicker than
migrating). The session fails if the server logged an ERROR no test said it expected.
"""

from __future__ import annotations

import asyncio
import itertools
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.postgres_server import PostgresServer, find_binaries

TEST_BACKEND = os.environ.get("FLUXCORD_TEST_DATABASE", "sqlite")
TEMPLATE = "fluxcord_template"
_numbers = itertools.count(1)

DsnFactory = Callable[..., str]


def on_postgres() -> bool:
    return TEST_BACKEND == "postgres"


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    binaries = find_binaries()
    if binaries is None:
        if os.environ.get("FLUXCORD_REQUIRE_POSTGRES"):
            pytest.fail("PostgreSQL is required (FLUXCORD_REQUIRE_POSTGRES) but not installed")
        pytest.skip("PostgreSQL is not installed (apt-get install postgresql)")
    server = PostgresServer(binaries)
    server.start()
    asyncio.run(_make_template(server))
    yield server
    problems = server.unexpected_errors()
    server.stop()
    if problems:
        pytest.fail("PostgreSQL logged errors no test expected:\n" + "\n".join(problems[:30]))


async def _make_template(server: PostgresServer) -> None:
    from bot.storage.db import open_database

    server.admin(f"CREATE DATABASE {TEMPLATE}")
    db = await open_database(server.dsn(TEMPLATE))  # applies every migration
    await db.close()


@pytest.fixture
def postgres_dsn_factory(postgres_server: PostgresServer) -> Iterator[DsnFactory]:
    """`make(migrated=True)`: the DSN of a fresh database (with the schema, or empty).

    Synchronous (through psql), so any fixture or test may call it, inside an event loop
    or not."""
    made: list[str] = []

    def make(*, migrated: bool = True) -> str:
        name = f"test_{os.getpid()}_{next(_numbers)}"
        template = TEMPLATE if migrated else "template0"
        postgres_server.admin(f"CREATE DATABASE {name} TEMPLATE {template}")
        made.append(name)
        return postgres_server.dsn(name)

    yield make
    for name in made:
        postgres_server.admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture
def database_target(request: pytest.FixtureRequest, tmp_path: Path) -> str | Path:
    """Where this test's store lives: a PostgreSQL database or an SQLite file."""
    if not on_postgres():
        return tmp_path / "fluxcord.sqlite3"
    make: DsnFactory = request.getfixturevalue("postgres_dsn_factory")
    return make()
