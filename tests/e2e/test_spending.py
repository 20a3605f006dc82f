"""Who may spend the operator's money, end to end on the Discord and BFL stand-ins: a server
not on ALLOWED_GUILD_IDS is refused privately (commands and old results' buttons alike), the
bot-wide budget refuses with its own text and warns the owner, servers joining and leaving
are logged, and direct messages are admitted from the store."""

from __future__ import annotations

import asyncio
import logging

import pytest

from bot.ledger.spending import SERVER_NOT_ALLOWED_TEXT
from cogs.client import FluxcordBot
from tests.e2e.conftest import World
from tests.e2e.test_community import BLOCKED, add_moderator, imagine, refused, say

BUDGET_REFUSAL = (
    "This bot's monthly budget, shared by every server it's on, doesn't have enough left for "
    "this request. It resets at 00:00 UTC on "
)


class LogLines(logging.Handler):
    """The lines a logger wrote, to wait on (the log is what the operator notices)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []
        self._written = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())
        self._written.set()

    async def wait_for(self, text: str) -> str:
        async def written() -> str:
            while True:
                found = next((line for line in self.lines if text in line), None)
                if found is not None:
                    return found
                self._written.clear()
                await self._written.wait()

        return await asyncio.wait_for(written(), 5)


def member_lookups(world: World) -> int:
    """Calls asking Discord whether someone is in a server."""
    return sum(
        1
        for request in world.discord.requests
        if request.method == "GET" and "/members/" in request.path
    )


async def test_only_servers_on_the_list_make_images_whatever_the_path(world: World) -> None:
    friends = world.discord.add_guild("Friends")
    friends_art = world.discord.add_text_channel(friends.id, "art")
    carol = world.discord.add_member(friends.id, "carol")
    bot = await world.start_bot(dev_guild_id=None)  # global commands: offered in both servers
    first = await world.discord.invoke_slash(
        world.alice, world.channel, "imagine", {"prompt": "a lighthouse"}
    )
    result = await first.wait_original(lambda m: bool(m.attachments), timeout=10)
    reroll = next(c for c in result.custom_ids if c.startswith("flux:reroll:"))
    await bot.services.engine.wait_closed([reroll.split(":")[2]], 10)
    await world.stop_bot(bot)

    # From now on only Friends may make images.
    bot = await world.start_bot(dev_guild_id=None, allowed_guild_ids=str(friends.id))
    text = await refused(world, bot, world.alice, world.channel, prompt="a comet")
    assert text == SERVER_NOT_ALLOWED_TEXT
    # The Reroll button of an image made before does not spend either.
    submissions, ledger = len(world.bfl.submissions), await ledger_rows(bot)
    click = await world.discord.click(world.bob, result, reroll)
    assert await world.refusal(click) == SERVER_NOT_ALLOWED_TEXT
    assert (len(world.bfl.submissions), await ledger_rows(bot)) == (submissions, ledger)
    # Friends, on the list, is served as usual.
    submission = await imagine(world, carol, friends_art, prompt="a comet")
    assert submission.body["prompt"] == "a comet"


async def ledger_rows(bot: FluxcordBot) -> int:
    return int(await bot.services.db.fetch_value("SELECT count(*) FROM ledger"))


@pytest.mark.parametrize("where", ["owner DM", "owner channel"])
async def test_the_bot_budget_refuses_with_its_own_text_and_warns_the_owner(
    world: World, where: str
) -> None:
    alerts = world.discord.add_text_channel(world.guild.id, "owner-alerts")
    bot = await world.start_bot(
        bot_monthly_credits=3,  # one pro image
        owner_alert_channel_id=alerts.id if where == "owner channel" else None,
    )
    await imagine(world, world.alice, world.channel, prompt="a lighthouse")
    if where == "owner DM":  # the stand-in's application belongs to the guild's owner
        channel = await world.discord.wait_for(
            lambda: world.discord.dm_channel(world.guild.owner_id)
        )
    else:
        channel = alerts
    warning = await world.discord.wait_for_message(
        lambda m: m.author_id == world.discord.application_id, channel_id=channel.id
    )
    assert warning.content.startswith(
        "Fluxcord has used up its monthly budget (BOT_MONTHLY_CREDITS): 3 of 3 credits used. "
        "Requests that would go over it are refused until it resets at 00:00 UTC on "
    )

    text = await refused(world, bot, world.bob, world.channel, prompt="a comet")
    assert text.startswith(BUDGET_REFUSAL) and text.endswith("Nothing was charged.")
    rows = await bot.services.db.fetch_all("SELECT percent FROM bot_budget_alerts ORDER BY 1")
    assert [row["percent"] for row in rows] == [80, 100]  # 80 % was passed on the way


async def test_joining_and_leaving_a_server_is_logged_with_its_member_count(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="cogs.client")
    lines = LogLines()
    logging.getLogger("cogs.client").addHandler(lines)
    try:
        bot = await world.start_bot(dev_guild_id=None)
        friends = world.discord.add_guild("Friends")  # the bot and the owner
        await lines.wait_for(f"joined server {friends.id} (Friends) with 2 members")

        # A member of it who may use direct messages there is forgotten with the server.
        await bot.services.server_settings.update(friends.id, 1, "dms", allow_dms=True)
        await bot.services.direct_messages.seen(friends.id, 1234)
        world.discord.remove_bot_from_guild(friends.id)
        await lines.wait_for(f"left server {friends.id} (Friends) with 2 members")
        assert await bot.services.db.fetch_value("SELECT count(*) FROM server_members") == 0
    finally:
        logging.getLogger("cogs.client").removeHandler(lines)


async def test_direct_messages_are_admitted_from_the_store_and_blocks_apply(
    world: World,
) -> None:
    bot = await world.start_bot(dev_guild_id=None)
    mod = add_moderator(world)
    await say(world, mod, "settings dms", allowed=True)
    await imagine(world, world.alice, world.channel, prompt="on the server")  # seen there
    alice_dm = world.discord.open_dm(world.alice)

    lookups = member_lookups(world)
    it = await world.discord.invoke_slash(world.alice, alice_dm, "imagine", {"prompt": "dm"})
    assert (await it.response()).type == 4  # answered at once: no "thinking…" was needed
    await it.wait_original(lambda m: bool(m.attachments), timeout=10)
    assert member_lookups(world) == lookups  # the store knew her: Discord was not asked

    # Blocked on the only server that grants direct messages: the block's text, in private.
    await say(world, mod, "mod block", user=world.alice, reason="spam")
    assert await refused(world, bot, world.alice, alice_dm, prompt="again") == BLOCKED
    assert member_lookups(world) == lookups
