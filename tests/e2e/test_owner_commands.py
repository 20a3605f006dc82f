"""The bot owner's commands, end to end on the Discord and BFL stand-ins: only the
application's owner (or its team's admins and developers) may run them; the servers list
matches the ledger; leaving removes the bot from the server; a user blocked everywhere is
refused in every server and charged nothing; a bot-wide default changed by the owner holds
from the next request on, without a restart."""

from __future__ import annotations

from typing import Any

import pytest

from bot.ledger import format_credits
from bot.operator import BLOCKED_EVERYWHERE_TEXT, NOT_OWNER_TEXT
from cogs.client import FluxcordBot
from tests.e2e.conftest import World
from tests.e2e.test_approvals import button, counts, enable_approvals, review_message, setup_world
from tests.e2e.test_community import answer, imagine, refused
from tests.fakes.discord.models import InteractionHandle, User

ADMINISTRATOR = 1 << 3


def owner(world: World) -> int:
    """The stand-in's application belongs to the first server's owner."""
    return world.discord.guild(world.guild.id).owner_id


async def owner_says(world: World, who: int | User, path: str, /, **options: Any) -> str:
    it = await world.discord.invoke_slash(who, world.channel, path, options)
    return str((await answer(it)).get("content") or "")


async def followup_text(it: InteractionHandle) -> str:
    """A deferred command's private answer."""
    callback = await it.response()
    assert callback.type == 5 and callback.data.get("flags", 0) & 64, callback
    message = await it.wait_original(lambda m: not m.loading and m.content)
    assert message.ephemeral
    return message.content


@pytest.mark.parametrize("path", ["owner servers", "owner defaults", "owner unblock"])
async def test_only_the_owner_or_their_team_may_run_owner_commands(world: World, path: str) -> None:
    admins = world.discord.add_role(world.guild.id, "Admins", permissions=ADMINISTRATOR)
    admin = world.discord.add_member(world.guild.id, "admin", roles=[admins.id])
    developer = world.discord.add_member(world.guild.id, "dev", roles=[admins.id])
    viewer = world.discord.add_member(world.guild.id, "viewer", roles=[admins.id])
    world.discord.set_team(owner(world), [(developer, "developer"), (viewer, "read_only")])
    bot = await world.start_bot()
    options: dict[str, Any] = {"user": world.alice} if path == "owner unblock" else {}

    # Discord hides the group from members without Administrator…
    with pytest.raises(PermissionError):
        await world.discord.invoke_slash(world.alice, world.channel, path, options)
    # …and the bot refuses everyone else who can see it, privately.
    for who in (admin, viewer):
        assert await owner_says(world, who, path, **options) == NOT_OWNER_TEXT
    # A member may be granted the command by the server's admins: still refused.
    it = await world.discord.invoke_slash(
        world.alice, world.channel, path, options, ignore_default_permissions=True
    )
    assert (await answer(it))["content"] == NOT_OWNER_TEXT
    # The team's owner and its developer are owners.
    for who in (owner(world), developer):
        it = await world.discord.invoke_slash(who, world.channel, path, options)
        callback = await it.response()
        text = (callback.data or {}).get("content") or await followup_text(it)
        assert text != NOT_OWNER_TEXT
    assert bot.services.global_blocks.all() == []


async def test_the_owner_lists_every_server_with_spend_matching_the_ledger(
    world: World,
) -> None:
    friends = world.discord.add_guild("Friends", channels=("art",))
    world.discord.add_guild("Quiet")
    carol = world.discord.add_member(friends.id, "carol")
    bot = await world.start_bot(dev_guild_id=None)
    friends_art = world.discord.channel(friends.channel_ids[0])
    await imagine(world, world.alice, world.channel, prompt="a lighthouse")  # pro: 3
    for prompt in ("a comet", "a harbour"):
        await imagine(world, carol, friends_art, "flux klein-4b", prompt=prompt)
    await bot.services.engine.wait_closed(
        [row["job_id"] for row in await bot.services.db.fetch_all("SELECT job_id FROM ledger")],
        10,
    )
    it = await world.discord.invoke_slash(owner(world), world.channel, "owner servers")
    text = await followup_text(it)
    lines = text.splitlines()
    spent = {
        row["guild_id"]: (row["mc"], row["images"])
        for row in await bot.services.db.fetch_all(
            "SELECT guild_id, SUM(credits_mc) AS mc, SUM(images) AS images FROM ledger"
            " GROUP BY guild_id"
        )
    }
    main_mc, main_images = spent[world.guild.id]
    friends_mc, friends_images = spent[friends.id]
    assert friends_mc < main_mc  # two klein images cost less than one pro
    assert lines[0].startswith("**3 servers**, biggest spender first")
    assert lines[0].endswith(f"{format_credits(main_mc + friends_mc)} credits.")
    assert lines[1:3] == [
        f"1. **Test Guild** (`{world.guild.id}`): {format_credits(main_mc)} credits, "
        f"{main_images} image",
        f"2. **Friends** (`{friends.id}`): {format_credits(friends_mc)} credits, "
        f"{friends_images} images",
    ]
    assert lines[3].startswith("3. **Quiet** (`") and lines[3].endswith("`): 0 credits, 0 images")
    assert len(lines) == 4


async def test_leave_asks_first_then_removes_the_bot_from_the_server(world: World) -> None:
    friends = world.discord.add_guild("Friends", channels=("art",))
    bot = await world.start_bot(dev_guild_id=None)
    the_owner = owner(world)
    assert "isn't a server id" in await owner_says(
        world, the_owner, "owner leave", server_id="friends"
    )
    assert "I'm not in a server with the id `42`" in await owner_says(
        world, the_owner, "owner leave", server_id="42"
    )

    it = await world.discord.invoke_slash(
        the_owner, world.channel, "owner leave", {"server_id": str(friends.id)}
    )
    question = await it.wait_original()
    assert question.ephemeral and question.content.startswith(
        f"Leave **Friends** (`{friends.id}`)?"
    )
    assert bot.application_id in world.discord.guild(friends.id).members  # not yet

    [leave] = [c for c in question.custom_ids if question.component(c)["label"] == "Leave"]
    click = await world.discord.click(the_owner, question, leave)
    done = await click.wait_original(lambda m: m.content.startswith("Left"))
    assert done.content == f"Left **Friends** (`{friends.id}`)."
    assert bot.application_id not in world.discord.guild(friends.id).members
    await world.discord.wait_for(lambda: bot.get_guild(friends.id) is None or None)
    assert bot.get_guild(world.guild.id) is not None  # only that server


async def test_a_user_blocked_everywhere_is_refused_in_every_server_and_dms_charged_nothing(
    world: World,
) -> None:
    friends = world.discord.add_guild("Friends", channels=("art",))
    world.discord.add_member(friends.id, "bob", user_id=world.bob.id)
    bot = await world.start_bot(dev_guild_id=None)
    friends_art = world.discord.channel(friends.channel_ids[0])
    text = await owner_says(world, owner(world), "owner block", user=world.bob, reason="spam")
    assert text.startswith(f"Blocked <@{world.bob.id}> everywhere")

    for channel in (world.channel, friends_art, world.discord.open_dm(world.bob)):
        assert await refused(world, bot, world.bob, channel, prompt="a comet") == (
            BLOCKED_EVERYWHERE_TEXT
        )
    assert await spent_by(bot, world.bob.id) == 0
    # Others are served as usual; lifting the block lets Bob in again.
    await imagine(world, world.alice, world.channel, prompt="a lighthouse")
    text = await owner_says(world, owner(world), "owner unblock", user=world.bob)
    assert text.startswith(f"Unblocked <@{world.bob.id}> everywhere")
    await imagine(world, world.bob, friends_art, prompt="a comet")


async def spent_by(bot: FluxcordBot, user_id: int) -> int:
    return int(
        await bot.services.db.fetch_value(
            "SELECT COALESCE(SUM(credits_mc), 0) FROM ledger WHERE user_id = ?", (user_id,)
        )
    )


async def test_a_default_changed_by_the_owner_holds_from_the_next_request(
    world: World,
) -> None:
    bot = await world.start_bot()
    the_owner = owner(world)
    shown = await owner_says(world, the_owner, "owner defaults")
    assert "`DEFAULT_USER_DAILY_IMAGES` = **25** · built-in default" in shown
    assert "`DEFAULT_VARIANT` = **pro** · built-in default" in shown

    # A bad value is explained and changes nothing.
    text = await owner_says(
        world, the_owner, "owner defaults", name="default_user_daily_images", value="lots"
    )
    assert text.startswith("DEFAULT_USER_DAILY_IMAGES ") and text.endswith("Nothing changed.")
    text = await owner_says(
        world, the_owner, "owner defaults", name="default_variant", value="max2"
    )
    assert text.startswith("DEFAULT_VARIANT=max2 is not a model; choose one of ")
    assert await bot.services.db.fetch_value("SELECT count(*) FROM bot_defaults") == 0

    text = await owner_says(
        world, the_owner, "owner defaults", name="default_user_daily_images", value="1"
    )
    assert f"`DEFAULT_USER_DAILY_IMAGES` = **1** · set by the owner (<@{the_owner}>" in text
    await owner_says(world, the_owner, "owner defaults", name="default_variant", value="klein-4b")
    submission = await imagine(world, world.alice, world.channel, prompt="a lighthouse")
    assert submission.endpoint == "flux-2-klein-4b"  # the new default model, no restart
    refusal = await refused(world, bot, world.alice, world.channel, prompt="a comet")
    assert refusal.startswith("This request would go over your daily image allowance (1 image")

    # Back to the environment's: Alice may ask again.
    text = await owner_says(
        world, the_owner, "owner defaults", name="default_user_daily_images", value="reset"
    )
    assert "`DEFAULT_USER_DAILY_IMAGES` = **25** · built-in default" in text
    await imagine(world, world.alice, world.channel, prompt="a comet")

    # The owner's values outlive a restart.
    await world.stop_bot(bot)
    bot = await world.start_bot()
    assert bot.services.generation.default_variant == "klein-4b"


async def test_a_request_held_for_review_is_not_made_once_its_member_is_blocked_everywhere(
    world: World,
) -> None:
    review, moderator, trusted = setup_world(world)
    bot = await world.start_bot()
    await enable_approvals(bot, world, review, trusted)
    before = world.newest_message_id()
    await world.discord.invoke_slash(world.bob, world.channel, "imagine", {"prompt": "a dog"})
    queued = await review_message(world, review)
    await owner_says(world, owner(world), "owner block", user=world.bob)

    await world.discord.click(moderator, queued, button(queued, "approve"))
    status = await world.discord.wait_for_message(
        lambda m: BLOCKED_EVERYWHERE_TEXT in m.content, channel_id=world.channel.id, after=before
    )
    assert not status.attachments
    assert world.bfl.submissions == []
    assert await counts(bot) == (0, 0)
