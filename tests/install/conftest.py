"""Fluxcord as an admin installs it: a wheel built from the project's files, installed into a
fresh virtual environment, run as the `fluxcord` console script from a folder that is not the
checkout.

The wheel and the environment are made once per session (a few seconds). The environment
borrows the test environment's installed dependencies through a path file instead of
downloading them again; the project itself comes only from the wheel (each session checks
that `bot` and `migrations` are imported from the new environment).

Later tests call the fixture: ``installed.run("migrate", env={...})``, or
``installed.python("-m", "bot", "--version")``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import venv
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# What the wheel is built from (as the Dockerfile copies it): nothing else of the checkout.
PROJECT_FILES = ("pyproject.toml", "README.md", "bot", "cogs", "migrations")
# Settings from the developer's environment that would change what the bot does.
ENV_PREFIXES = ("DISCORD_", "BFL_", "AIML_", "DATABASE_", "PROVIDER_", "LOG_", "DEFAULT_", "SHARD_")
SCRIPTS = "Scripts" if os.name == "nt" else "bin"


@dataclass(frozen=True)
class Installed:
    """A virtual environment holding the built wheel, and a working folder with no .env."""

    venv: Path
    wheel: Path
    workdir: Path

    @property
    def scripts(self) -> Path:
        return self.venv / SCRIPTS

    def environment(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        env = {
            name: value
            for name, value in os.environ.items()
            if not name.startswith(ENV_PREFIXES) and name not in {"PYTHONPATH", "VIRTUAL_ENV"}
        }
        env["PATH"] = os.pathsep.join([str(self.scripts), env.get("PATH", "")])
        return {**env, **(extra or {})}

    def run(
        self,
        *args: str,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        timeout: float = 60,
    ) -> subprocess.CompletedProcess[str]:
        """`fluxcord ARGS...`: the console script, as an admin types it."""
        return self._run([str(self.scripts / "fluxcord"), *args], env, cwd, timeout)

    def python(
        self,
        *args: str,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        timeout: float = 60,
    ) -> subprocess.CompletedProcess[str]:
        """The environment's own Python, e.g. ``python("-m", "bot", "migrate")``."""
        return self._run([str(self.scripts / "python"), *args], env, cwd, timeout)

    def _run(
        self,
        command: list[str],
        env: Mapping[str, str] | None,
        cwd: Path | None,
        timeout: float,
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            command,
            cwd=cwd or self.workdir,
            env=self.environment(env),
            capture_output=True,
            text=True,
            timeout=timeout,
        )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(item.path).parents:
            item.add_marker(pytest.mark.install)


@pytest.fixture(scope="session")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Installed]:
    base = tmp_path_factory.mktemp("installed")
    source = base / "source"
    source.mkdir()
    for name in PROJECT_FILES:
        origin = ROOT / name
        if origin.is_dir():
            shutil.copytree(origin, source / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(origin, source / name)
    dist = base / "dist"
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(dist), "."],
        cwd=source,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert build.returncode == 0, build.stderr
    (wheel,) = dist.glob("fluxcord-*.whl")

    environment = base / "venv"
    venv.EnvBuilder(with_pip=True).create(environment)
    # The test environment's dependencies, after the new environment's own packages: a path
    # file adds the folders only (their own .pth files, such as the checkout's editable
    # install, are not run).
    site = Path(
        subprocess.check_output(
            [str(environment / SCRIPTS / "python"), "-c", "import sysconfig; "
             "print(sysconfig.get_paths()['purelib'])"],
            text=True,
        ).strip()
    )  # fmt: skip
    borrowed = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (site / "zz_test_dependencies.pth").write_text("\n".join(sorted(borrowed)) + "\n")

    result = Installed(venv=environment, wheel=wheel, workdir=base / "admin")
    result.workdir.mkdir()
    install = result.python(
        "-m", "pip", "install", "--quiet", "--no-deps", "--no-index", str(wheel), timeout=300
    )
    assert install.returncode == 0, install.stderr
    where = result.python("-c", "import bot, migrations; print(bot.__file__, migrations.__file__)")
    assert where.returncode == 0, where.stderr
    for module_file in where.stdout.split():
        assert Path(module_file).is_relative_to(environment), where.stdout  # not the checkout
    yield result
