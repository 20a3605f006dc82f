"""The README's backup one-liner, run against a database the bot has open, with writes that
are still only in the WAL: the copy has them and is a sound database."""

from __future__ import annotations

import asyncio
import re
import sqlite3
import sys
from pathlib import Path

from bot.storage.db import open_database

ROOT = Path(__file__).resolve().parents[2]


def documented_backup_code() -> str:
    readme = (ROOT / "README.md").read_text("utf-8")
    found = re.search(r'^\s*docker exec fluxcord python -c "([^"]+)" (\S+) (.+)$', readme, re.M)
    assert found is not None, "the README's Docker backup command"
    assert found.group(2) == "/data/fluxcord.sqlite3"  # the image's DATABASE_PATH
    return found.group(1)


async def test_the_documented_backup_copies_a_live_database(tmp_path: Path) -> None:
    live = tmp_path / "fluxcord.sqlite3"
    db = await open_database(live)
    try:
        # A bigger autocheckpoint than these writes: they stay in the -wal file only.
        await db.execute("PRAGMA wal_autocheckpoint=100000")
        for n in range(50):
            await db.execute(
                "INSERT INTO app_state (key, value) VALUES (?, ?)", (f"key{n}", "x" * 500)
            )
        assert (tmp_path / "fluxcord.sqlite3-wal").stat().st_size > 0
        with sqlite3.connect(f"file:{live}?mode=ro&immutable=1", uri=True) as main_file_only:
            # What copying the main file alone would give: none of those writes.
            assert main_file_only.execute("SELECT count(*) FROM sqlite_master").fetchone()[0] == 0

        copy = tmp_path / "backup.sqlite3"
        backup = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            documented_backup_code(),
            str(live),
            str(copy),
            stderr=asyncio.subprocess.PIPE,
        )
        _, errors = await asyncio.wait_for(backup.communicate(), 60)
        assert backup.returncode == 0, errors.decode()
        assert await db.fetch_value("SELECT count(*) FROM app_state") == 50  # still running
    finally:
        await db.close()
    with sqlite3.connect(copy) as backup:
        assert backup.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert backup.execute("SELECT count(*) FROM app_state").fetchone()[0] == 50
        versions = backup.execute("SELECT count(*) FROM schema_migrations").fetchone()[0]
    assert versions > 0
