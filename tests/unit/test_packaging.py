"""What ships: the lock agrees with pyproject.toml, and the Docker files do what the docs say
(no Docker daemon here: the files are read, the compose files parsed as YAML)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

from bot.errors import SettingsError
from bot.settings import Settings, load_settings

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))
LOCK = tomllib.loads((ROOT / "uv.lock").read_text("utf-8"))
DOCKERFILE = (ROOT / "Dockerfile").read_text("utf-8")


def declared() -> dict[tuple[str, str | None], SpecifierSet]:
    """pyproject's requirements: (name, extra or None) -> specifiers."""
    project = PYPROJECT["project"]
    found = {}
    groups = [(None, project["dependencies"])]
    groups += list(project["optional-dependencies"].items())
    for extra, requirements in groups:
        for text in requirements:
            requirement = Requirement(text)
            found[(canonicalize_name(requirement.name), extra)] = requirement.specifier
    return found


def locked_project() -> dict[str, Any]:
    (project,) = [p for p in LOCK["package"] if p["name"] == PYPROJECT["project"]["name"]]
    return project


def test_the_lock_is_current_with_pyproject() -> None:
    """What `uv lock --check` compares, offline: after editing the dependencies, run
    `uv lock` and commit uv.lock (CI and the Docker image install from it)."""
    recorded = {}
    for entry in locked_project()["metadata"]["requires-dist"]:
        marker = entry.get("marker")
        extra = re.fullmatch(r"extra == '([a-z0-9-]+)'", marker).group(1) if marker else None
        recorded[(canonicalize_name(entry["name"]), extra)] = SpecifierSet(
            entry.get("specifier", "")
        )
    assert recorded == declared(), "uv.lock is out of date: run `uv lock`"
    assert LOCK["requires-python"] == PYPROJECT["project"]["requires-python"]
    extras = set(PYPROJECT["project"]["optional-dependencies"])
    assert set(locked_project()["metadata"]["provides-extras"]) == extras


def test_every_locked_version_satisfies_pyproject_and_has_hashes() -> None:
    versions: dict[str, list[Version]] = {}
    for package in LOCK["package"]:
        if "version" in package:
            versions.setdefault(package["name"], []).append(Version(package["version"]))
            files = [*package.get("wheels", []), package.get("sdist", {})]
            assert all(f["hash"].startswith("sha256:") for f in files if f), package["name"]
    for (name, _), specifier in declared().items():
        assert versions.get(name), f"{name} is not in uv.lock"
        assert all(specifier.contains(v) for v in versions[name]), name


def test_the_lock_serves_every_supported_python_and_platform() -> None:
    """Python 3.11 and 3.12 on Linux, macOS and Windows: every compiled dependency has a
    wheel for each, so an install never needs a compiler."""
    for package in LOCK["package"]:
        wheels = [w["url"].rsplit("/", 1)[1] for w in package.get("wheels", [])]
        if not wheels or any(w.endswith("-none-any.whl") for w in wheels):
            continue  # the project itself, or pure Python
        for python in ("cp311", "cp312"):
            tagged = [w for w in wheels if f"-{python}-" in w or "-abi3-" in w or "-py3-" in w]
            for platform in ("manylinux", "macosx", "win_amd64"):
                assert any(platform in w for w in tagged), (package["name"], python, platform)


def test_ci_and_docker_use_the_same_uv() -> None:
    ci = re.search(r"^UV_VERSION=(\S+)$", (ROOT / ".ci/run").read_text("utf-8"), re.M)
    docker = re.search(r"^ARG UV_VERSION=(\S+)$", DOCKERFILE, re.M)
    assert ci and docker and ci.group(1) == docker.group(1)


# --------------------------------------------------------------------------- Dockerfile
def test_the_image_is_pinned_multi_stage_and_not_editable() -> None:
    bases = re.findall(r"^FROM (\S+)", DOCKERFILE, re.M)
    assert len(bases) == 2 and bases[0] == bases[1]
    assert re.fullmatch(r"python:3\.11\.\d+-slim-bookworm@sha256:[0-9a-f]{64}", bases[0])
    assert "COPY --from=build /opt/fluxcord /opt/fluxcord" in DOCKERFILE
    assert " -e " not in DOCKERFILE and "--editable" not in DOCKERFILE
    # The locked dependencies come before the code, so a code edit does not reinstall them.
    lines = DOCKERFILE.splitlines()
    first_code = lines.index("COPY bot ./bot")
    assert lines.index("COPY pyproject.toml uv.lock ./") < first_code
    install = next(i for i, line in enumerate(lines) if "--require-hashes" in line)
    assert install < first_code
    assert "pip install --no-deps /tmp/dist/fluxcord-*.whl" in DOCKERFILE


def test_the_image_runs_fluxcord_as_a_user_with_a_liveness_check() -> None:
    runtime = DOCKERFILE.split("stage 2", 1)[1]
    assert re.search(r"^USER fluxcord$", runtime, re.M)
    assert 'CMD ["fluxcord"]' in runtime
    healthcheck = runtime[runtime.index("HEALTHCHECK") :]
    assert "/livez" in healthcheck.split("CMD [", 2)[1]


# --------------------------------------------------------------------------- compose
def compose(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / name).read_text("utf-8"))
    return loaded


def published_on_loopback_only(service: dict[str, Any]) -> bool:
    return all(str(port).startswith("127.0.0.1:") for port in service.get("ports", []))


def test_the_sqlite_compose_file_keeps_data_and_metrics_private() -> None:
    bot = compose("compose.yaml")["services"]["fluxcord"]
    assert bot["env_file"] == ".env"
    assert "fluxcord-data:/data" in bot["volumes"]
    assert "fluxcord-data" in compose("compose.yaml")["volumes"]
    assert bot["environment"]["DATABASE_PATH"].startswith("/data/")
    assert bot["ports"] and published_on_loopback_only(bot)
    assert (
        seconds(bot["stop_grace_period"])
        > Settings.model_fields["shutdown_grace_seconds"].get_default()
    )


def test_the_postgres_compose_file_waits_for_a_healthy_database() -> None:
    spec = compose("compose.postgres.yaml")
    db, bot = spec["services"]["db"], spec["services"]["fluxcord"]
    assert "pg_isready" in db["healthcheck"]["test"]
    assert bot["depends_on"] == {"db": {"condition": "service_healthy"}}
    assert (
        seconds(bot["stop_grace_period"])
        > Settings.model_fields["shutdown_grace_seconds"].get_default()
    )
    assert "stop_grace_period" in db
    assert published_on_loopback_only(bot) and "ports" not in db
    # The bot's secrets are Docker secrets named after settings, read from SECRETS_DIR.
    assert bot["environment"]["SECRETS_DIR"] == "/run/secrets"
    assert {"database_url", "discord_token"} <= set(bot["secrets"])
    assert set(bot["secrets"]) <= set(Settings.model_fields)
    assert set(bot["secrets"]) | set(db["secrets"]) == set(spec["secrets"])
    assert db["environment"]["POSTGRES_PASSWORD_FILE"] == "/run/secrets/postgres_password"
    assert "POSTGRES_PASSWORD" not in db["environment"]


def seconds(duration: str) -> float:
    match = re.fullmatch(r"(\d+)s", duration)
    assert match, duration
    return float(match.group(1))


# --------------------------------------------------------------------------- secrets
@pytest.fixture
def no_bot_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    for name in ("DISCORD_TOKEN", "BFL_API_KEY", "DATABASE_URL", "SECRETS_DIR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)  # no stray .env
    return tmp_path


def test_a_docker_secret_file_supplies_the_discord_token(
    no_bot_environment: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secrets = no_bot_environment / "run-secrets"
    secrets.mkdir()
    (secrets / "discord_token").write_text("token-from-a-secret\n")
    (secrets / "bfl_api_key").write_text("bfl-key-from-a-secret")
    monkeypatch.setenv("SECRETS_DIR", str(secrets))
    settings = load_settings()
    assert settings.discord_token.get_secret_value() == "token-from-a-secret"
    assert settings.bfl_api_key is not None
    assert settings.bfl_api_key.get_secret_value() == "bfl-key-from-a-secret"
    # Blanked in the logs like any secret setting.
    assert "token-from-a-secret" in settings.secret_values()
    # The environment still wins over a file (as over .env).
    monkeypatch.setenv("DISCORD_TOKEN", "token-from-the-environment")
    assert load_settings().discord_token.get_secret_value() == "token-from-the-environment"


def test_without_secrets_dir_no_files_are_read(no_bot_environment: Path) -> None:
    with pytest.raises(SettingsError, match="DISCORD_TOKEN is required"):
        load_settings()


def test_a_secrets_dir_that_is_not_there_is_named(
    no_bot_environment: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    missing = no_bot_environment / "nowhere"
    monkeypatch.setenv("SECRETS_DIR", str(missing))
    with pytest.raises(SettingsError) as refused:
        load_settings()
    assert str(refused.value) == f"SECRETS_DIR {missing} is not a directory"
