"""Moving from SQLite to PostgreSQL, as an admin would: a bot runs on SQLite and members
generate; it is stopped with a job still generating; `fluxcord copy-to` copies the data;
the bot then runs on PostgreSQL. /usage and /usage-admin show the same figures, and the
job left unfinished is delivered.

Needs PostgreSQL (skipped when it is not installed; FLUXCORD_REQUIRE_POSTGRES=1 fails).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from bot.cli import copy_to as copy_to_command
from tests.e2e.conftest import World
from tests.e2e.test_usage import add_moderator, ask, make_image, with_file
from tests.fakes.discord.models import User
from tests.postgres_fixtures import DsnFactory


@pytest.fixture
def database_target(tmp_path: Path) -> Path:
    """The bot starts on SQLite, whichever store the rest of the suite runs on."""
    return tmp_path / "fluxcord.sqlite3"


async def figures(world: World, mod: User) -> dict[str, object]:
    """What members and moderators are shown about spending."""
    server = await with_file(
        await world.discord.invoke_slash(mod, world.channel, "usage-admin server")
    )
    export = await with_file(
        await world.discord.invoke_slash(mod, world.channel, "usage-admin export")
    )
    return {
        "alice /usage": await ask(world, world.alice, "usage"),
        "bob /usage": await ask(world, world.bob, "usage"),
        "alice /usage-admin user": await ask(
            world,
            mod,
            "usage-admin user",
            {"member": world.alice},
        ),
        "/usage-admin server": server.content,
        "/usage-admin export": (export.content, export.attachments[0].data),
    }


async def test_a_bot_moved_to_postgresql_shows_the_same_figures_and_finishes_its_job(
    postgres_dsn_factory: DsnFactory,  # first: its database outlives the bots `world` stops
    world: World,
    capsys: pytest.CaptureFixture[str],
) -> None:
    target = postgres_dsn_factory(migrated=False)
    bot = await world.start_bot()
    mod = add_moderator(world)
    limit = await ask(world, mod, "quota set", {"window": "day", "kind": "images", "amount": 5})
    assert limit.startswith("Set ")
    await make_image(world, world.alice, "a harbour at dawn")
    await make_image(world, world.bob, "a fox")
    await make_image(world, world.alice, "a harbour at dusk")
    # One job left generating at the provider when the bot stops.
    world.bfl.hold()
    unfinished = await world.discord.invoke_slash(
        world.bob, world.channel, "imagine", {"prompt": "a slow glacier"}
    )
    await world.discord.wait_for(
        lambda: [
            t for t in world.bfl.tasks.values() if t.polls and t.body["prompt"] == "a slow glacier"
        ],
        timeout=10,
    )
    on_sqlite = await figures(world, mod)
    assert "Jobs: 0 queued · 1 running (holding 3 credits" in str(on_sqlite["bob /usage"])
    await world.stop_bot(bot)

    settings = world.settings(database_url=target)
    assert await copy_to_command.execute(settings, argparse.Namespace(url=target)) == 0
    printed = capsys.readouterr().out
    assert "every count and sum matches" in printed
    jobs_line = next(line.split() for line in printed.splitlines() if line.startswith("jobs "))
    assert jobs_line == ["jobs", "4", "4", "ok"]

    await world.start_bot(database_url=target)  # now on PostgreSQL
    on_postgres = await figures(world, mod)
    assert on_postgres == on_sqlite
    # Non-trivial figures: spending, the running job's hold, the moderator's limit of 5
    # images a day for the server (4 used), the ledger's rows.
    assert str(on_postgres["alice /usage"]).startswith(
        "**Your usage**\n**Today**: 2 images · 6 credits ($0.06) — 1 image · 94 credits left"
    )
    assert "Total: 4 images · 12 credits ($0.12)" in str(on_postgres["/usage-admin server"])

    world.bfl.release()
    result = await unfinished.wait_original(lambda m: bool(m.attachments), timeout=20)
    [task] = [t for t in world.bfl.submissions if t.body["prompt"] == "a slow glacier"]
    assert result.attachments[0].data == world.bfl.image_bytes(task.task_id or "")
    assert len(world.bfl.submissions) == 4  # followed on PostgreSQL, never sent again
    after = await ask(world, world.bob, "usage")
    assert after.startswith("**Your usage**\n**Today**: 2 images · 6 credits ($0.06)")
