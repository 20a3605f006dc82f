"""A throwaway PostgreSQL server for the tests, on 127.0.0.1, started from Debian's binaries.

`initdb` refuses to run as root, so as root every server command runs as the `postgres`
user (`runuser`). The server trades durability for speed (fsync off): its data is gone
when the session ends anyway. Its log is kept so the session can fail on ERROR lines that
no test said it expected.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

LOG_PREFIX = "%m [%p] "
_FAST_AND_FRAGILE = (
    *("-c", "fsync=off"),
    *("-c", "synchronous_commit=off"),
    *("-c", "full_page_writes=off"),
)
# Lines worth a failure: the server refused a statement or lost a session unexpectedly.
_PROBLEM = re.compile(r"\b(ERROR|FATAL|PANIC):")


def find_binaries() -> Path | None:
    with contextlib.suppress(OSError, subprocess.CalledProcessError):
        found = subprocess.run(
            ["pg_config", "--bindir"], capture_output=True, text=True, check=True
        ).stdout.strip()
        if (Path(found) / "initdb").exists() and (Path(found) / "postgres").exists():
            return Path(found)
    versions = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda path: int(path.parts[-3]) if path.parts[-3].isdigit() else 0,
    )
    return versions[-1].parent if versions else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PostgresServer:
    def __init__(self, binaries: Path, *, durable: bool = False) -> None:
        self._bin = binaries
        # Tests trade durability for speed; a benchmark compared with SQLite must not.
        self._durable = durable
        self.port = _free_port()
        self.folder = Path(tempfile.mkdtemp(prefix="fluxcord-pg-"))
        self.log_path = self.folder / "server.log"
        self._process: subprocess.Popen[bytes] | None = None
        # Lines the harness itself causes: `pg_isready` asking while the server starts, and a
        # test database dropped (WITH FORCE) while autovacuum happens to be working on it.
        self._expected: list[re.Pattern[str]] = [
            re.compile("the database system is starting up"),
            re.compile("terminating autovacuum process due to administrator command"),
        ]
        self._as_root = os.geteuid() == 0

    def _command(self, *argv: str) -> list[str]:
        return ["runuser", "-u", "postgres", "--", *argv] if self._as_root else list(argv)

    def start(self) -> None:
        if self._as_root:
            shutil.chown(self.folder, "postgres")
        data = self.folder / "data"
        subprocess.run(
            self._command(
                str(self._bin / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres",
                "--no-sync", "-E", "UTF8", "--locale=C",
            ),
            check=True, capture_output=True,
        )  # fmt: skip
        log = open(self.log_path, "ab")  # noqa: SIM115 - the server writes to it until stop()
        if self._as_root:
            shutil.chown(self.log_path, "postgres")
        self._process = subprocess.Popen(self._server_command(), stdout=log, stderr=log)
        log.close()
        atexit.register(self.stop)
        self._wait_until_ready()

    def _server_command(self) -> list[str]:
        return self._command(
            str(self._bin / "postgres"), "-D", str(self.folder / "data"),
            "-c", "listen_addresses=127.0.0.1", "-p", str(self.port),
            "-k", str(self.folder),
            *(() if self._durable else _FAST_AND_FRAGILE),
            "-c", "max_connections=400", "-c", "shared_buffers=128MB",
            "-c", f"log_line_prefix={LOG_PREFIX}",
        )  # fmt: skip

    def _wait_until_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process is not None and self._process.poll() is not None:
                break
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2),
            ):
                ready = subprocess.run(
                    [
                        str(self._bin / "pg_isready"),
                        "-h",
                        "127.0.0.1",
                        "-p",
                        str(self.port),
                        "-U",
                        "postgres",
                    ],
                    capture_output=True,
                )
                if ready.returncode == 0:
                    return
            time.sleep(0.05)
        tail = self.log_path.read_text(errors="replace")[-2000:]
        self.stop()
        raise RuntimeError(f"PostgreSQL did not start:\n{tail}")

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.terminate()  # SIGTERM: smart shutdown; our sessions are closed by now
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if self.folder.exists() and process is not None:
            shutil.rmtree(self.folder, ignore_errors=True)

    def halt(self, mode: str = "fast") -> None:
        """Stop the server as an operator would (`pg_ctl stop -m fast|immediate`), keeping its
        data, so `resume_serving` brings the same databases back on the same port."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            # To the postmaster itself: as root the started process is `runuser`.
            os.kill(self._postmaster(), signal.SIGINT if mode == "fast" else signal.SIGQUIT)
            process.wait(30)

    def resume_serving(self) -> None:
        """Start the halted server again on its data and port."""
        log = open(self.log_path, "ab")  # noqa: SIM115 - the server writes to it until stop()
        self._process = subprocess.Popen(self._server_command(), stdout=log, stderr=log)
        log.close()
        self._wait_until_ready()

    def freeze(self) -> None:
        """SIGSTOP the postmaster and every backend: the server is there but answers nothing."""
        for pid in self._pids():
            os.kill(pid, signal.SIGSTOP)

    def thaw(self) -> None:
        for pid in self._pids():
            os.kill(pid, signal.SIGCONT)

    def _postmaster(self) -> int:
        return int((self.folder / "data" / "postmaster.pid").read_text().split()[0])

    def _pids(self) -> list[int]:
        postmaster = self._postmaster()
        children = subprocess.run(
            ["pgrep", "-P", str(postmaster)], capture_output=True, text=True
        ).stdout.split()
        return [postmaster, *(int(pid) for pid in children)]

    def admin(self, sql: str) -> None:
        """Run one statement as the superuser, synchronously (CREATE/DROP DATABASE)."""
        subprocess.run(
            [str(self._bin / "psql"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres",
             "-d", "postgres", "-v", "ON_ERROR_STOP=1", "-q", "-c", sql],
            check=True, capture_output=True,
        )  # fmt: skip

    def fresh_database(self, name: str) -> str:
        """An empty database called `name` (dropped first if it exists); its DSN."""
        self.admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        self.admin(f"CREATE DATABASE {name}")
        return self.dsn(name)

    def dsn(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    @contextlib.contextmanager
    def expect_error(self, pattern: str) -> Iterator[None]:
        """Log lines matching `pattern` are expected (a test causing a server error)."""
        compiled = re.compile(pattern)
        self._expected.append(compiled)
        yield

    def unexpected_errors(self) -> list[str]:
        if not self.log_path.exists():
            return []
        lines = self.log_path.read_text(errors="replace").splitlines()
        problems = []
        for index, line in enumerate(lines):
            if not _PROBLEM.search(line):
                continue
            context = " ".join(lines[index : index + 2])  # the STATEMENT line follows
            if not any(pattern.search(context) for pattern in self._expected):
                problems.append(line)
        return problems


def durable_postgres() -> PostgresServer:
    """A started server that, unlike the tests', keeps fsync on, for the benchmarks: a
    comparison with SQLite's synchronous=FULL would mean nothing otherwise."""
    binaries = find_binaries()
    if binaries is None:
        raise SystemExit("PostgreSQL is not installed (apt-get install postgresql)")
    server = PostgresServer(binaries, durable=True)
    server.start()
    return server
