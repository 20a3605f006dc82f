"""Direct messages with several processes: two stores on one database stand for two bot
processes. Process A runs the shard of the server that allows direct messages; B, like the
process with shard 0, receives the direct messages and knows that server only from the store.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path

import pytest

from bot.community.direct import MEMBERSHIP_FRESH_SECONDS, DirectMessages
from bot.community.policy import DMS_CLOSED_TEXT, CommunityPolicy, Requester
from bot.errors import InvalidRequest
from bot.moderation.strikes import Moderation
from bot.servers.audit import AuditLog
from bot.servers.settings import SettingsStore
from bot.storage.db import Database, open_database

GUILD, OTHER_GUILD, CHANNEL, DM_CHANNEL = 10, 11, 100, 900
MOD, ALICE, BOB, CAROL = 1, 2, 3, 4
BLOCKED_TEXT = "You are blocked from making images on this server."
BLOCKED_UNTIL = "You are blocked from making images on this server until <t:"


class Discord:
    """What a process's Discord client answers about membership, and when it was asked."""

    def __init__(self, members: set[tuple[int, int]] | None = None) -> None:
        self.members = members or set()
        self.calls: list[object] = []

    async def is_member(self, guild_id: int, user_id: int) -> bool | None:
        self.calls.append(("lookup", guild_id, user_id))
        return (guild_id, user_id) in self.members

    async def acknowledge(self) -> None:
        self.calls.append("acknowledged")


@dataclass
class Process:
    db: Database
    settings: SettingsStore
    moderation: Moderation
    direct: DirectMessages
    policy: CommunityPolicy
    discord: Discord
    now: list[float]

    async def reload(self) -> None:
        """What another process's change notice makes every process do (bot/invalidation)."""
        await self.settings.load()
        await self.moderation.load()

    async def dm(self, user_id: int) -> None:
        await self.policy.admit(
            Requester(user_id=user_id, guild_id=None, channel_id=DM_CHANNEL),
            acknowledge=self.discord.acknowledge,
        )

    async def asks_on(self, guild_id: int, user_id: int) -> None:
        await self.policy.admit(Requester(user_id=user_id, guild_id=guild_id, channel_id=CHANNEL))


Start = Callable[..., Awaitable[Process]]


@pytest.fixture
async def start(database_target: str | Path) -> AsyncIterator[Start]:
    async with AsyncExitStack() as stack:

        async def start_process(
            discord: Discord | None = None, allowed: frozenset[int] | None = None
        ) -> Process:
            db = await open_database(database_target)
            stack.push_async_callback(db.close)
            audit = AuditLog(db, audit_channel=lambda _guild: None)
            settings = SettingsStore(db, audit, known_variants=lambda: ["pro"])
            moderation = Moderation(db, audit, settings=settings.get)
            await settings.load()
            await moderation.load()
            now = [1_800_000_000.0]

            def server_allowed(guild: int | None) -> bool:
                return allowed is None or guild is None or guild in allowed

            direct = DirectMessages(
                db, settings, moderation, server_allowed=server_allowed, clock=lambda: now[0]
            )
            discord = discord or Discord()
            direct.lookup = discord.is_member
            policy = CommunityPolicy(
                settings, moderation, direct_messages=direct, server_allowed=server_allowed
            )
            return Process(db, settings, moderation, direct, policy, discord, now)

        yield start_process


async def refusal(process: Process, user_id: int) -> str:
    with pytest.raises(InvalidRequest) as refused:
        await process.dm(user_id)
    return refused.value.user_message


async def test_a_member_seen_by_the_other_process_is_admitted_without_asking_discord(
    start: Start,
) -> None:
    a = await start()
    b = await start(Discord(members={(GUILD, CAROL)}))
    await a.settings.update(GUILD, MOD, "dms allowed", allow_dms=True)
    await b.reload()

    await a.asks_on(GUILD, ALICE)  # Alice uses the bot on the server, on A's shard
    await b.dm(ALICE)
    assert b.discord.calls == []  # admitted from the store: no Discord call, nothing to await

    # Bob was never seen: B asks Discord, after acknowledging, and refuses him.
    assert await refusal(b, BOB) == DMS_CLOSED_TEXT
    assert b.discord.calls == ["acknowledged", ("lookup", GUILD, BOB)]
    # Asking again at once does not ask Discord again.
    assert await refusal(b, BOB) == DMS_CLOSED_TEXT
    assert len(b.discord.calls) == 2

    # Carol is a member Discord knows of: admitted, and now every process knows her.
    await b.dm(CAROL)
    await a.dm(CAROL)
    assert a.discord.calls == []

    # A day later the sighting is checked with Discord again (she may have left).
    a.now[0] += MEMBERSHIP_FRESH_SECONDS + 1
    assert await refusal(a, CAROL) == DMS_CLOSED_TEXT
    assert a.discord.calls == ["acknowledged", ("lookup", GUILD, CAROL)]


async def test_a_member_blocked_on_every_granting_server_gets_the_blocks_text(
    start: Start,
) -> None:
    a = await start()
    b = await start(Discord(members={(OTHER_GUILD, ALICE)}))
    await a.settings.update(GUILD, MOD, "dms allowed", allow_dms=True)
    await a.asks_on(GUILD, ALICE)
    await a.moderation.block(GUILD, MOD, ALICE, hours=1, reason="spam")
    await b.reload()

    assert (await refusal(b, ALICE)).startswith(BLOCKED_UNTIL)
    assert b.discord.calls == []  # the only granting server knows her: nothing to look up

    # She is in a second granting server too, blocked there for good: the text names the
    # block that lifts last.
    await b.settings.update(OTHER_GUILD, MOD, "dms allowed", allow_dms=True)
    await b.moderation.block(OTHER_GUILD, MOD, ALICE, hours=None, reason="spam")
    assert await refusal(b, ALICE) == BLOCKED_TEXT
    assert b.discord.calls == ["acknowledged", ("lookup", OTHER_GUILD, ALICE)]
    await a.reload()
    assert await refusal(a, ALICE) == BLOCKED_TEXT
    assert a.discord.calls == []  # both memberships come from the store

    # Unblocked on the other server: admitted through it.
    await b.moderation.unblock(OTHER_GUILD, MOD, ALICE)
    await a.reload()
    await a.dm(ALICE)
    assert a.discord.calls == []


async def test_only_servers_that_may_use_the_bot_grant_direct_messages(start: Start) -> None:
    a = await start(allowed=frozenset({OTHER_GUILD}))
    await a.settings.update(GUILD, MOD, "dms allowed", allow_dms=True)
    a.discord.members.add((GUILD, ALICE))
    assert await refusal(a, ALICE) == DMS_CLOSED_TEXT
    assert a.discord.calls == []  # no granting server, so nothing to ask
    assert await a.db.fetch_value("SELECT count(*) FROM server_members") == 0


async def test_members_who_leave_and_servers_the_bot_leaves_stop_counting(start: Start) -> None:
    a = await start()
    b = await start()
    await a.settings.update(GUILD, MOD, "dms allowed", allow_dms=True)
    await b.reload()
    for member in (ALICE, BOB):
        await a.direct.seen(GUILD, member)  # joined (with the Server Members intent)
    await b.dm(ALICE)
    await a.direct.left(GUILD, ALICE)
    assert await refusal(b, ALICE) == DMS_CLOSED_TEXT
    await b.dm(BOB)
    await a.direct.server_left(GUILD)
    assert await refusal(b, BOB) == DMS_CLOSED_TEXT
    assert await a.db.fetch_value("SELECT count(*) FROM server_members") == 0
