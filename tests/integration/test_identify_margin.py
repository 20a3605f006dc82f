"""The fleet's IDENTIFY gate against a Discord stand-in as strict as Discord.

Discord times IDENTIFYs on arrival, by its own clock: one that arrives even a millisecond
before 5 s since its bucket's previous one is refused (opcode 9). The gate spaces turns by
the database's clock, and each IDENTIFY then still has its own trip to make, so turns spaced
by exactly the interval can arrive early. The gate's margin absorbs that.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from bot.shards import IDENTIFY_MARGIN, IdentifyGate
from bot.storage.db import Database
from tests.fakes.discord_server import FakeDiscord

OP_DISPATCH, OP_IDENTIFY, OP_INVALID_SESSION, OP_HELLO = 0, 2, 9, 10
INTERVAL = 0.5  # the stand-in's and the gate's, shortened from Discord's 5 s
# How much longer the first IDENTIFY's trip takes than the second's (real ones differ by
# a few milliseconds; exaggerated so that no scheduling jitter on a busy machine hides it).
SLOWER_TRIP = 0.1


@pytest.fixture
async def fake() -> AsyncIterator[FakeDiscord]:
    async with FakeDiscord(shard_count=2, identify_interval=INTERVAL) as discord_fake:
        yield discord_fake


class GatewayLink:
    """A raw gateway connection that has had its HELLO: IDENTIFY is one frame away."""

    def __init__(self, fake: FakeDiscord, ws: aiohttp.ClientWebSocketResponse) -> None:
        self._fake = fake
        self._ws = ws

    async def identify(self, shard_id: int) -> bool:
        """Send IDENTIFY; True if Discord answered READY, False for INVALID_SESSION."""
        payload: dict[str, Any] = {
            "token": self._fake.token,
            "intents": 0,
            "properties": {"os": "linux", "browser": "test", "device": "test"},
            "shard": [shard_id, 2],
        }
        await self._ws.send_json({"op": OP_IDENTIFY, "d": payload})
        while True:
            frame = await asyncio.wait_for(self._ws.receive_json(), 5)
            if frame["op"] == OP_INVALID_SESSION:
                return False
            if frame["op"] == OP_DISPATCH and frame["t"] == "READY":
                return True


async def connect(session: aiohttp.ClientSession, fake: FakeDiscord) -> GatewayLink:
    ws = await session.ws_connect(fake.base_url.replace("http://", "ws://", 1) + "/gateway/")
    hello = await asyncio.wait_for(ws.receive_json(), 5)
    assert hello["op"] == OP_HELLO
    return GatewayLink(fake, ws)


@pytest.mark.parametrize(
    ("margin", "second_accepted"),
    [(0.0, False), (IDENTIFY_MARGIN, True)],
    ids=["exact-interval-is-refused", "with-margin-is-accepted"],
)
async def test_turns_spaced_by_the_gate_arrive_far_enough_apart(
    db: Database, fake: FakeDiscord, margin: float, second_accepted: bool
) -> None:
    # Two processes' gates (shards 0 and 1, one bucket: max_concurrency 1) on one store.
    first_gate = IdentifyGate(db, interval=INTERVAL, margin=margin)
    second_gate = IdentifyGate(db, interval=INTERVAL, margin=margin)
    async with aiohttp.ClientSession() as session:
        first, second = await connect(session, fake), await connect(session, fake)

        async def second_process() -> bool:
            await second_gate.wait_turn(1)
            return await second.identify(1)

        await first_gate.wait_turn(0)
        later = asyncio.create_task(second_process())
        await asyncio.sleep(SLOWER_TRIP)  # the first IDENTIFY's slower trip to Discord
        assert await first.identify(0)
        assert await later is second_accepted
    assert fake.identify_rate_violations == (0 if second_accepted else 1)
    assert fake.identify_counts == ({0: 1, 1: 1} if second_accepted else {0: 1})


async def test_the_stand_in_refuses_an_identify_a_millisecond_early(fake: FakeDiscord) -> None:
    now = [1000.0]
    fake.identify_clock = lambda: now[0]
    async with aiohttp.ClientSession() as session:
        assert await (await connect(session, fake)).identify(0)
        now[0] += INTERVAL - 0.001
        assert not await (await connect(session, fake)).identify(1)
        now[0] += 0.001  # exactly the interval after the accepted one
        assert await (await connect(session, fake)).identify(1)
    assert fake.identify_rate_violations == 1
    assert fake.identify_counts == {0: 1, 1: 1}
