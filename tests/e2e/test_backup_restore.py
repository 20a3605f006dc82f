"""Back up while jobs run, restore as docs/backups.md says, and every unfinished job is
delivered by the bot started on the restored file."""

from __future__ import annotations

import argparse
import re
import shutil
from pathlib import Path

import pytest

from bot.cli import backup as backup_command
from tests.e2e.conftest import World
from tests.fakes.discord.models import InteractionHandle
from tests.postgres_fixtures import on_postgres

pytestmark = pytest.mark.skipif(on_postgres(), reason="backs up the SQLite file")


async def test_jobs_running_during_a_backup_are_delivered_from_the_restored_file(
    world: World, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    database = world.database_target
    assert isinstance(database, Path)
    world.bfl.hold()  # no task ends: the jobs are unfinished when the backup is made
    bot = await world.start_bot(provider_max_active=2)
    asked: list[tuple[InteractionHandle, str]] = []
    for member, prompt in (
        (world.alice, "a lighthouse"),
        (world.bob, "a heron"),
        (world.alice, "a red kite"),
    ):
        it = await world.discord.invoke_slash(member, world.channel, "imagine", {"prompt": prompt})
        asked.append((it, prompt))
    # Two generating at the provider (polled, so their task ids are stored), one in line.
    await asked[2][0].wait_original(lambda m: "Queued" in m.content)
    await world.discord.wait_for(
        lambda: len(world.bfl.tasks) == 2 and all(t.polls for t in world.bfl.tasks.values()),
        timeout=10,
    )
    states = await bot.services.db.fetch_all("SELECT state FROM jobs ORDER BY created_at")
    assert [row[0] for row in states] == ["submitted", "submitted", "queued"]

    args = argparse.Namespace(path=tmp_path / "backups")
    assert await backup_command.execute(world.settings(), args) == 0
    printed = capsys.readouterr().out
    found = re.fullmatch(r"Backup written: (\S+) \(.+, integrity ok\)\n", printed)
    assert found is not None, printed
    backup = Path(found.group(1))

    await world.stop_bot(bot)
    # The restore, as documented: the bot stopped, its database (and any -wal and -shm
    # beside it) moved aside, the backup copied in its place.
    aside = tmp_path / "before-restore"
    aside.mkdir()
    for path in database.parent.glob(database.name + "*"):
        shutil.move(path, aside / path.name)
    shutil.copyfile(backup, database)

    restored = await world.start_bot(provider_max_active=2)
    world.bfl.release()
    delivered = {}
    for it, prompt in asked:
        message = await it.wait_original(lambda m: bool(m.attachments), timeout=20)
        delivered[prompt] = message
    submissions = {s.body["prompt"]: s.task_id for s in world.bfl.submissions}
    assert len(world.bfl.submissions) == 3  # the two generating were followed, not resent
    for prompt, message in delivered.items():
        assert message.attachments[0].data == world.bfl.image_bytes(submissions[prompt] or "")
        assert message.embeds[0]["description"] == prompt
    ids = await restored.services.db.fetch_all("SELECT id FROM jobs")
    jobs = await restored.services.engine.wait_closed([row[0] for row in ids], 10)
    assert sorted(job.state.value for job in jobs) == ["delivered"] * 3
    ledger = await restored.services.db.fetch_all(
        "SELECT status, charged_images, credits_mc, reserved_mc FROM ledger"
    )
    assert len(ledger) == 3
    for status, images, credits_mc, reserved_mc in ledger:
        assert (status, images) == ("charged", 1)
        assert credits_mc == reserved_mc == 3000  # 3 credits each, as estimated
    month = await restored.services.db.fetch_value(
        "SELECT credits_mc FROM usage_totals WHERE user_id = 0 AND period = 'month'"
    )
    assert month == 9000
    # Each result once: the answer to its own request, and nothing else posted an image.
    assert len([m for m in world.discord.messages(world.channel.id) if m.attachments]) == 3
