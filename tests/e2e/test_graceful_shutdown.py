"""SIGTERM (`docker stop`, systemd) while the AI/ML API is making an image: the real bot
process stops claiming, waits for the answer within SHUTDOWN_GRACE_SECONDS, posts the image
once, charges it once, and exits 0 (issue 21, item 9). Before, the request was dropped at
the provider, which had made and billed the image.

A real process is needed for a real signal; the process tests run on PostgreSQL."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import pytest

from bot.storage.db import open_database
from tests.e2e.fleet import add_places, running_fleet, wait_until
from tests.fakes.aiml_server import FakeAIML
from tests.postgres_fixtures import DsnFactory, on_postgres

pytestmark = pytest.mark.skipif(not on_postgres(), reason="real processes run on PostgreSQL")

AIML_KEY = "aiml-key-0123456789abcdef"


async def test_sigterm_lets_an_image_in_flight_be_posted_once_and_charged_once(
    postgres_dsn_factory: DsnFactory, tmp_path: Path
) -> None:
    dsn = postgres_dsn_factory()
    async with (
        FakeAIML(api_key=AIML_KEY, latency=3.0) as aiml,
        running_fleet(
            dsn,
            tmp_path,
            shard_count=1,
            settings={
                "AIML_API_KEY": AIML_KEY,
                "AIML_API_BASE": aiml.base_url,
                "SHUTDOWN_GRACE_SECONDS": "20",
            },
        ) as fleet,
    ):
        discord = fleet.discord
        [place] = add_places(discord, 1)
        await fleet.start(0)
        await discord.wait_until_connected(timeout=60)
        await discord.invoke_slash(
            place.members[0], place.channel, "flux dev", {"prompt": "a lighthouse at dusk"}
        )

        async def at_the_provider() -> bool:
            return bool(aiml.requests)

        await wait_until(at_the_provider, 30, "the request to reach the AI/ML API")
        bot = fleet.processes[0]
        bot.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(bot.wait(), 40) == 0

        bot_id = discord.application_id
        results = [
            message
            for message in discord.messages(place.channel.id)
            if message.author_id == bot_id and message.attachments
        ]
        assert len(results) == 1  # posted once
        assert results[0].attachments[0].data == aiml.image_bytes(0)
        assert len(aiml.requests) == 1  # made once
        db = await open_database(dsn, migrate=False)
        try:
            rows = await db.fetch_all("SELECT state FROM jobs")
            charges = await db.fetch_all("SELECT status, charged_mc FROM ledger")
        finally:
            await db.close()
        assert [row["state"] for row in rows] == ["delivered"]
        assert len(charges) == 1 and charges[0]["status"] == "charged"
        assert charges[0]["charged_mc"] > 0
        assert "Traceback" not in fleet.log_text()
