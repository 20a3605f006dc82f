"""The running bot keeps one clock, the database's, for everything other processes read back
(tests/integration/test_one_clock.py shows what a skewed process's own clock would break)."""

from __future__ import annotations

from bot.storage.base import DATABASE_NOW
from bot.storage.clock import DatabaseClock
from tests.e2e.conftest import World


async def test_the_bot_runs_on_one_synced_database_clock(world: World) -> None:
    bot = await world.start_bot()
    services = bot.services
    clock = services.clock
    assert isinstance(clock, DatabaseClock) and clock.synced
    # The engine, the store, the ledger and the Discord side all read that one clock.
    assert services.engine._clock is clock
    assert services.engine.store._clock is clock
    assert services.ledger._clock is clock
    assert bot.notifier._clock is clock

    before = world.newest_message_id()
    await world.discord.invoke_slash(world.alice, world.channel, "imagine", {"prompt": "tide"})
    await world.result_after(before)
    row = await services.db.fetch_one(
        f"SELECT created_at, interaction_expires_at, {DATABASE_NOW[services.db.backend]} AS now"
        " FROM jobs"
    )
    assert row is not None
    # Received a moment ago by the database's clock; usable for 15 minutes less a margin.
    assert 0 <= row["now"] - row["created_at"] < 10
    assert 0 < row["interaction_expires_at"] - row["created_at"] <= 15 * 60
