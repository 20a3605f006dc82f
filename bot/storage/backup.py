"""A consistent copy of the SQLite database while the bot runs (`fluxcord backup`).

SQLite's online backup API copies the pages a few at a time, on a thread of its own. The
source connection holds one read transaction for the whole copy: in WAL mode (the bot's) a
reader never blocks a writer, so the bot keeps writing, and the copy is the database as it
was at one instant, writes still only in the -wal file included. (Without that transaction
SQLite restarts a stepwise backup whenever another connection writes, and a bot writing
every few seconds could keep it from ever finishing.)

The final name is reserved first (an empty file created exclusively, so two backups never
take the same one and none replaces a file); the copy is written beside it, checked
(`PRAGMA integrity_check`), flushed, and then renamed over the reservation.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from threading import Event

from bot.errors import StartupError

# Pages per step (4 KiB each): small enough that a cancelled backup stops within moments.
PAGES_PER_STEP = 256
BUSY_TIMEOUT_MS = 5000
SUFFIX = ".sqlite3"
PARTIAL = ".partial"


class BackupCancelled(Exception):
    """The backup was stopped (Ctrl-C): the partial copy is removed."""


@dataclass(frozen=True)
class BackupResult:
    path: Path
    size: int
    schema_version: int | None


def backup_name(at: dt.datetime) -> str:
    """`fluxcord-20261207-183501Z.sqlite3`: UTC, sortable, no characters a shell minds."""
    return f"fluxcord-{at.astimezone(dt.UTC):%Y%m%d-%H%M%SZ}{SUFFIX}"


def default_backup_dir(database_path: Path) -> Path:
    return database_path.parent / "backups"


def wanted_path(destination: Path | None, database_path: Path, at: dt.datetime) -> Path:
    """Where the backup goes before any collision is resolved: a directory (an existing
    one, or a name without a suffix) gets a timestamped name in it."""
    if destination is None:
        return default_backup_dir(database_path) / backup_name(at)
    if destination.is_dir() or not destination.suffix:
        return destination / backup_name(at)
    return destination


def _candidates(path: Path) -> list[Path]:
    """The name itself, then `-2`, `-3`, ... before the suffix."""
    return [path, *(path.with_name(f"{path.stem}-{n}{path.suffix}") for n in range(2, 1000))]


def _claim_name(path: Path) -> Path:
    """Reserve the first free name (O_EXCL, so two backups at once never share one)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    for candidate in _candidates(path):
        try:
            fd = os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            continue
        os.close(fd)
        return candidate
    raise StartupError(f"Too many backups named like {path.name} in {path.parent}")


def _open_source(database_path: Path) -> sqlite3.Connection:
    if not database_path.is_file():
        raise StartupError(
            f"There is no SQLite database at {database_path}: check DATABASE_PATH", exit_code=2
        )
    # mode=rw: never create an empty database where the admin expected theirs.
    source = sqlite3.connect(f"file:{database_path}?mode=rw", uri=True, isolation_level=None)
    source.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    return source


Progress = Callable[[int, int], None]  # (pages left, pages in all), on the backup's thread


def _copy(database_path: Path, partial: Path, stop: Event, progress: Progress | None) -> int | None:
    """On a worker thread: copy, switch the copy to a single self-contained file, check it.
    Returns the copy's schema version."""

    def step(_status: int, remaining: int, total: int) -> None:
        if progress is not None:
            progress(remaining, total)
        if stop.is_set():
            raise BackupCancelled

    source = _open_source(database_path)
    try:
        # Created by us first: it holds every secret the bot keeps, so it is the owner's only.
        os.close(os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600))
        target = sqlite3.connect(partial, isolation_level=None)
        try:
            source.execute("BEGIN")  # one snapshot for every step (see the module docstring)
            source.execute("SELECT count(*) FROM sqlite_master").fetchone()
            source.backup(target, pages=PAGES_PER_STEP, progress=step)
            source.execute("COMMIT")
            # The copy inherits WAL mode: go back to a rollback journal, so that the backup is
            # one file (no -wal beside it to lose when it is moved or copied).
            target.execute("PRAGMA journal_mode=DELETE")
            problems = [row[0] for row in target.execute("PRAGMA integrity_check")]
            if problems != ["ok"]:
                raise StartupError(
                    "The backup failed its integrity check (" + "; ".join(problems[:3]) + ")"
                )
            version = _schema_version(target)
        finally:
            target.close()
    finally:
        source.close()
    with open(partial, "rb+") as written:  # on disk before it is given its name
        os.fsync(written.fileno())
    return version


def _schema_version(conn: sqlite3.Connection) -> int | None:
    try:
        value = conn.execute("SELECT max(version) FROM schema_migrations").fetchone()[0]
    except sqlite3.OperationalError:  # not (yet) a Fluxcord database
        return None
    return None if value is None else int(value)


def _fsync_directory(directory: Path) -> None:
    with contextlib.suppress(OSError):  # not every system can open a directory
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _prepare(database_path: Path, destination: Path | None, at: dt.datetime) -> Path:
    if not database_path.is_file():
        _open_source(database_path)  # raises the one-line explanation
    return _claim_name(wanted_path(destination, database_path, at))


def _publish(partial: Path, final: Path) -> int:
    os.replace(partial, final)
    _fsync_directory(final.parent)
    return final.stat().st_size


def _remove(*paths: Path) -> None:
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


async def backup_database(
    database_path: Path,
    destination: Path | None = None,
    *,
    now: dt.datetime | None = None,
    progress: Progress | None = None,
) -> BackupResult:
    """Copy the live database to a new file; see the module docstring. Every file operation
    runs on a thread: a slow disk never stalls the caller's event loop."""
    at = now or dt.datetime.now(dt.UTC)
    final = await asyncio.to_thread(_prepare, database_path, destination, at)
    partial = final.with_name(final.name + PARTIAL)
    stop = Event()
    copying = asyncio.ensure_future(
        asyncio.to_thread(_copy, database_path, partial, stop, progress)
    )
    try:
        try:
            # Shielded: a cancelled caller stops the thread at its next step and waits for it,
            # so no thread is left writing a file nobody will clean up.
            version = await asyncio.shield(copying)
        except asyncio.CancelledError:
            stop.set()
            with contextlib.suppress(Exception):  # BackupCancelled, or what beat it
                await copying
            raise
        size = await asyncio.to_thread(_publish, partial, final)
    except BaseException:
        # Synchronous on purpose: it must happen even when the caller was cancelled.
        _remove(partial, final, partial.with_name(partial.name + "-journal"))
        raise
    return BackupResult(final, size, version)


def describe_size(size: int) -> str:
    """1234567 -> "1.2 MB" (decimal units, as `ls -h --si` and file managers show them)."""
    if size < 1000:
        return f"{size} bytes"
    value = size / 1000
    for unit in ("KB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            break
        value /= 1000
    return f"{value:.1f} {unit}"
