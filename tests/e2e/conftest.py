"""End-to-end fixtures: the real FluxcordBot (real discord.py) against the Discord and BFL
stand-ins, both on 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from bot.settings import Settings
from bot.storage.db import open_database
from cogs.client import FluxcordBot
from tests.conftest import BFL_KEY
from tests.fakes.aiml_server import FakeAIML
from tests.fakes.bfl_server import FakeBFL
from tests.fakes.discord.models import Channel, Guild, InteractionHandle, Message, User
from tests.fakes.discord_server import FakeDiscord


@dataclass
class World:
    discord: FakeDiscord
    bfl: FakeBFL
    guild: Guild
    channel: Channel
    alice: User
    bob: User
    database_target: str | Path  # an SQLite file, or a PostgreSQL URL
    aiml: FakeAIML | None = None
    bots: list[tuple[FluxcordBot, asyncio.Task[None]]] = field(default_factory=list)

    def settings(self, **overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "discord_token": self.discord.token,
            "bfl_api_key": BFL_KEY,
            "bfl_api_base": self.bfl.base_url,
            "dev_guild_id": self.guild.id,
            "poll_initial_interval": 0.05,
            "poll_max_interval": 0.2,
            "job_deadline_seconds": 20,
            "web_port": 0,  # an ephemeral port: several bots may run in one test session
            "allow_loopback_provider_urls": True,  # the stand-ins live on 127.0.0.1
            # Tests send requests back to back; the ones about pacing set it themselves.
            "button_cooldown_seconds": 0,
        }
        if self.aiml is not None:
            values.update(aiml_api_key=AIML_KEY, aiml_api_base=self.aiml.base_url)
        if isinstance(self.database_target, Path):
            values["database_path"] = self.database_target
        else:
            values["database_url"] = self.database_target
        values.update(overrides)
        return Settings(**values)

    async def write_sql(self, sql: str, params: tuple[Any, ...] = ()) -> None:
        """Change the store behind the bot's back (a crash, time passing), on either engine."""
        db = await open_database(self.database_target, migrate=False)
        try:
            await db.execute(sql, params)
        finally:
            await db.close()

    async def start_bot(self, **overrides: Any) -> FluxcordBot:
        bot = FluxcordBot(self.settings(**overrides), guild_ready_timeout=0.05)
        ready = asyncio.Event()
        bot.add_listener(_set_when_ready(ready), "on_ready")
        task = asyncio.create_task(bot.start(self.discord.token))
        self.bots.append((bot, task))
        await asyncio.wait_for(ready.wait(), 10)
        return bot

    def newest_message_id(self) -> int:
        messages = self.discord.messages(self.channel.id, include_deleted=True)
        return messages[-1].id if messages else 0

    async def result_after(self, after: int, within: float = 10) -> Message:
        """The first finished result (an image posted by the bot) newer than `after`."""
        bot_id = self.discord.application_id
        return await self.discord.wait_for_message(
            lambda m: m.author_id == bot_id and bool(m.attachments) and not m.ephemeral,
            channel_id=self.channel.id,
            after=after,
            timeout=within,
        )

    async def refusal(self, it: InteractionHandle) -> str:
        """The private text an interaction ended with (a direct reply or the edited deferral)."""
        callback = await it.response()
        if callback.type == 4:
            assert callback.data.get("flags", 0) & 64, "refusals must be ephemeral"
            return str(callback.data["content"])

        def answer() -> Message | None:
            # The edited private deferral, or the private followup that replaced a public one.
            original = it.original
            if original is not None and not original.deleted and original.content:
                return original
            return next((m for m in it.followups if m.content and not m.deleted), None)

        message = await self.discord.wait_for(answer)
        assert message.ephemeral, "refusals must be ephemeral"
        original = it.original
        assert original is None or original.ephemeral or original.deleted, (
            "a public deferral must not stay behind a refusal"
        )
        return message.content

    async def stop_bot(self, bot: FluxcordBot) -> None:
        for index, (known, task) in enumerate(self.bots):
            if known is bot:
                await bot.close()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
                del self.bots[index]
                return


def _set_when_ready(event: asyncio.Event) -> Any:
    async def on_ready() -> None:
        event.set()

    return on_ready


AIML_KEY = "test-aiml-key-0123456789"


@pytest.fixture
async def world_with_aiml(world: World) -> AsyncIterator[World]:
    """The same world with the AI/ML API configured as well."""
    async with FakeAIML(api_key=AIML_KEY, latency=0.05) as aiml:
        world.aiml = aiml
        yield world


@pytest.fixture
async def world(database_target: str | Path) -> AsyncIterator[World]:
    async with FakeBFL(api_key=BFL_KEY, latency=0.1) as bfl, FakeDiscord() as discord_fake:
        guild = discord_fake.add_guild("Test Guild")
        channel = discord_fake.add_text_channel(guild.id, "art")
        alice = discord_fake.add_member(guild.id, "alice")
        bob = discord_fake.add_member(guild.id, "bob")
        with discord_fake.patch_discord_py():
            state = World(discord_fake, bfl, guild, channel, alice, bob, database_target)
            try:
                yield state
            finally:
                for bot, task in list(state.bots):
                    await bot.close()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
        assert not discord_fake.unhandled_requests, discord_fake.unhandled_requests
