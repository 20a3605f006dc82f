"""`fluxcord doctor` from the installed wheel, as an admin runs it, against the stand-ins
(DISCORD_API_BASE and BFL_API_BASE point at them, as a REST proxy's address would)."""

from __future__ import annotations

import asyncio
import socket

from bot.version import __version__
from tests.fakes.bfl_server import FakeBFL
from tests.fakes.discord_server import FakeDiscord
from tests.install.conftest import Installed

BFL_KEY = "bfl-installed-doctor-key"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_doctor_from_the_wheel_checks_everything_and_names_the_bad_key(
    installed: Installed, tmp_path: object
) -> None:
    async with FakeBFL(api_key=BFL_KEY) as bfl, FakeDiscord() as discord_fake:
        guild = discord_fake.add_guild("Installed Guild")
        discord_fake.add_text_channel(guild.id, "art")
        env = {
            "DISCORD_API_BASE": discord_fake.base_url,
            "DISCORD_TOKEN": discord_fake.token,
            "BFL_API_BASE": bfl.base_url,
            "ALLOW_LOOPBACK_PROVIDER_URLS": "true",
            "ALLOWED_GUILD_IDS": str(guild.id),
            "DATABASE_PATH": str(installed.workdir / f"doctor-{free_port()}.sqlite3"),
        }
        assert (await asyncio.to_thread(installed.run, "migrate", env=env)).returncode == 0

        good = await asyncio.to_thread(installed.run, "doctor", env={**env, "BFL_API_KEY": BFL_KEY})
        assert good.returncode == 0, good.stdout + good.stderr
        lines = good.stdout.splitlines()
        assert lines[0].startswith(f"ok      version: Fluxcord {__version__}")
        assert any(line.startswith("ok      BFL key: BFL_API_KEY") for line in lines), lines
        assert any(line.startswith("ok      server Installed Guild") for line in lines), lines

        wrong = await asyncio.to_thread(
            installed.run, "doctor", env={**env, "BFL_API_KEY": "not-the-key"}
        )
        assert wrong.returncode == 1
        problems = [line for line in wrong.stdout.splitlines() if line.startswith("problem")]
        assert len(problems) == 1, wrong.stdout
        assert "BFL_API_KEY" in problems[0] and "401" in problems[0], problems
        assert "not-the-key" not in wrong.stdout + wrong.stderr
