"""`fluxcord doctor` as an admin runs it, against the Discord, BFL and AI/ML API stand-ins:
one line per check, and the exit code."""

from __future__ import annotations

import argparse
import io
import socket
from pathlib import Path

import pytest

from bot.cli import doctor
from bot.settings import Settings
from bot.storage.db import open_database
from bot.storage.migrations import discover, migrations_dir
from bot.version import __version__
from cogs.permissions import invite_url
from tests.e2e.conftest import World
from tests.fakes.discord._util import ATTACH_FILES, VIEW_CHANNEL

SCHEMA = max(m.version for m in discover(migrations_dir("sqlite")))


@pytest.fixture(autouse=True)
def quick_ready(monkeypatch: pytest.MonkeyPatch) -> None:
    # discord.py waits guild_ready_timeout (2 s) after the last server before on_ready.
    monkeypatch.setattr(doctor, "CLIENT_OPTIONS", {"guild_ready_timeout": 0.05})


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def run_doctor(settings: Settings) -> tuple[int, list[str]]:
    out = io.StringIO()
    code = await doctor.execute(settings, argparse.Namespace(), out=out)
    return code, out.getvalue().splitlines()


async def migrated(world: World) -> None:
    await (await open_database(world.database_target)).close()


def database_name(world: World) -> str:
    target = world.database_target
    return str(target) if isinstance(target, Path) else "PostgreSQL (DATABASE_URL)"


async def test_a_healthy_setup_is_all_ok_and_exits_0(world: World) -> None:
    port = free_port()
    public = f"http://127.0.0.1:{port}"
    # With Public Bot on (as the stand-in's application is), only a list of servers keeps
    # strangers from spending the credits.
    settings = world.settings(
        web_port=port, webhook_public_url=public, allowed_guild_ids=str(world.guild.id)
    )
    await world.start_bot(web_port=port, webhook_public_url=public)  # serves the webhook path

    code, lines = await run_doctor(settings)

    guild = world.guild
    assert lines == [
        f"ok      version: Fluxcord {__version__} (database schema {SCHEMA})",
        f"ok      database: {database_name(world)} answers and is migrated (schema {SCHEMA})",
        "ok      BFL key: BFL_API_KEY: Black Forest Labs accepts the key (10,000 credits left)",
        f"ok      webhook: {public}/webhooks/bfl/livez reaches Fluxcord {__version__}",
        f"ok      DISCORD_TOKEN: logged in as Fluxcord (application "
        f"{world.discord.application_id})",
        "ok      intents: the Message Content intent is on, as MESSAGE_CONTENT_INTENT asks",
        f"ok      invite: {invite_url(world.discord.application_id)}",
        f"ok      server Test Guild ({guild.id}): the bot has the permissions it needs in "
        "every channel it can see",
    ]
    assert code == 0


async def test_a_broken_setup_says_what_to_fix_and_exits_1(world: World) -> None:
    await migrated(world)
    art = world.channel
    # A moderator took Attach Files from the bot in #art, where members may generate.
    world.discord.set_overwrite(art, world.discord.application_id, deny=ATTACH_FILES)
    world.discord.privileged_intents = 0  # Message Content turned off in the portal
    closed = free_port()  # nothing listens there
    settings = world.settings(
        bfl_api_key="wrong-bfl-key-1618",
        webhook_public_url=f"http://127.0.0.1:{closed}",
        web_port=0,
    )

    code, lines = await run_doctor(settings)

    assert (
        "warning Public Bot: 'Public Bot' is on in the Discord developer portal and "
        "ALLOWED_GUILD_IDS is unset: anyone can add this bot"
    ) in "\n".join(lines)
    problems = [line for line in lines if line.startswith("problem")]
    assert problems == [
        "problem BFL key: BFL_API_KEY was rejected by Black Forest Labs (401): check the key in "
        "the BFL dashboard",
        f"problem webhook: WEBHOOK_PUBLIC_URL does not reach Fluxcord: GET http://127.0.0.1:"
        f"{closed}/webhooks/bfl/livez failed (ConnectError): check the address, and that the "
        "proxy forwards /webhooks/bfl/ to WEB_HOST:WEB_PORT (127.0.0.1:0)",
        "problem intents: MESSAGE_CONTENT_INTENT is on but the Message Content intent is off "
        "for the application: turn it on in the developer portal (Bot → Privileged Gateway "
        "Intents), or set MESSAGE_CONTENT_INTENT=false",
        f"problem server Test Guild ({world.guild.id}): the bot lacks Attach Files in #art "
        "where members may generate: give the Fluxcord role those permissions (Server "
        "Settings → Roles) or allow them in each channel's permissions",
    ]
    assert code == 1
    assert "wrong-bfl-key-1618" not in "\n".join(lines)


async def test_only_the_channels_moderators_allowed_are_checked(world: World) -> None:
    await migrated(world)
    hidden = world.discord.add_text_channel(world.guild.id, "mods-only")
    world.discord.set_overwrite(hidden, world.guild.id, deny=VIEW_CHANNEL)  # @everyone
    await world.write_sql(
        "INSERT INTO guild_settings (guild_id, enabled_channels, updated_at, updated_by)"
        " VALUES (?, ?, 0, 1)",
        (world.guild.id, f"[{world.channel.id}, {hidden.id}]"),
    )
    code, lines = await run_doctor(world.settings())
    [server] = [line for line in lines if "server Test Guild" in line]
    assert server.startswith(
        f"problem server Test Guild ({world.guild.id}): the bot lacks View Channel, Send "
        "Messages, Embed Links, Attach Files, Read Message History in #mods-only where"
    )
    assert code == 1

    # Unrestricted, a channel hidden from the bot is the server's choice, not a problem.
    await world.write_sql("DELETE FROM guild_settings WHERE guild_id = ?", (world.guild.id,))
    code, lines = await run_doctor(world.settings())
    assert code == 0, lines


async def test_a_wrong_token_is_named(world: World) -> None:
    await migrated(world)
    code, lines = await run_doctor(world.settings(discord_token="not-the-token"))
    assert (
        "problem DISCORD_TOKEN: rejected by Discord: copy the token again from the developer "
        "portal (Bot → Reset Token)"
    ) in lines
    assert code == 1


async def test_a_database_not_migrated_yet_is_a_problem(world: World) -> None:
    if not isinstance(world.database_target, Path):
        pytest.skip("an SQLite file made by hand")
    db = await open_database(world.database_target, migrate=False)
    await db.close()
    code, lines = await run_doctor(world.settings())
    assert (
        f"problem database: {world.database_target} is at schema 0, this release needs "
        f"{SCHEMA}: run `fluxcord migrate` (the bot also migrates at start)"
    ) in lines
    assert code == 1


async def test_a_database_from_a_newer_release_is_a_problem(world: World) -> None:
    await migrated(world)
    await world.write_sql(
        "INSERT INTO schema_migrations (version, name) VALUES (?, ?)", (9999, "9999_future.sql")
    )
    code, lines = await run_doctor(world.settings())
    assert (
        f"problem database: {database_name(world)} has schema 9999, newer than this release's "
        f"({SCHEMA}): upgrade Fluxcord, or restore the backup taken before the upgrade"
    ) in lines
    assert code == 1


async def test_a_file_that_is_not_a_database_is_a_problem(world: World) -> None:
    if not isinstance(world.database_target, Path):
        pytest.skip("an SQLite file made by hand")
    world.database_target.write_bytes(b"not a database, " * 100)
    code, lines = await run_doctor(world.settings())
    assert (f"problem database: {world.database_target} cannot be opened (DatabaseError)") in lines
    assert code == 1


async def test_the_webhook_url_is_checked_while_the_bot_is_not_running(world: World) -> None:
    await migrated(world)
    port = free_port()
    public = f"http://127.0.0.1:{port}"
    code, lines = await run_doctor(world.settings(web_port=port, webhook_public_url=public))
    assert (
        f"ok      webhook: {public}/webhooks/bfl/livez reaches this doctor (the bot is not running)"
    ) in lines
    assert code == 0, lines
