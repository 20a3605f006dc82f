"""/usage, /usage-admin and /quota end to end: the real bot on the Discord stand-in."""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Callable

import pytest
from PIL import Image

from bot.ledger import Period, format_reset
from cogs.client import FluxcordBot
from tests.e2e.conftest import World
from tests.e2e.test_community import audit_messages, audit_posted
from tests.fakes.discord_server import InteractionHandle, Message, User

MANAGE_GUILD = 1 << 5
MODERATOR_COMMANDS: list[tuple[str, dict[str, object]]] = [
    ("usage-admin user", {"member": 0}),
    ("usage-admin server", {}),
    ("usage-admin export", {}),
    ("quota set", {"window": "day", "kind": "images", "amount": 5}),
    ("quota grant", {"member": 0, "kind": "images", "amount": 1}),
    ("quota reset", {}),
    ("quota show", {}),
]
MISSING_PERMISSION = "You are missing Manage Server permission(s) to run this command."


def add_moderator(world: World) -> User:
    mods = world.discord.add_role(world.guild.id, "Mods", permissions=MANAGE_GUILD)
    return world.discord.add_member(world.guild.id, "mod", roles=[mods.id])


async def reply(it: InteractionHandle) -> str:
    """The ephemeral answer to a command (a direct reply or a filled-in deferral)."""
    callback = await it.response()
    if callback.type == 4:
        assert callback.data is not None and callback.data.get("flags", 0) & 64
        return str(callback.data["content"])
    message = await it.wait_original(lambda m: not m.loading)
    assert message.ephemeral
    return message.content


async def ask(world: World, who: User, path: str, options: dict[str, object] | None = None) -> str:
    """Run a command in the art channel; its private answer."""
    return await reply(await world.discord.invoke_slash(who, world.channel, path, options or {}))


async def with_file(it: InteractionHandle) -> Message:
    message = await it.wait_original(lambda m: bool(m.attachments), timeout=10)
    assert message.ephemeral
    return message


async def make_image(world: World, user: User, prompt: str) -> Message:
    before = world.newest_message_id()
    await world.discord.invoke_slash(user, world.channel, "imagine", {"prompt": prompt})
    return await world.result_after(before)


def resets(bot: FluxcordBot, period: Period) -> Callable[[], int]:
    return lambda: bot.services.ledger.policy.schedule.end(period, time.time())


def public_messages(world: World) -> list[Message]:
    return [m for m in world.discord.messages(world.channel.id) if not m.ephemeral]


# --------------------------------------------------------------------------- members
async def test_a_member_over_quota_is_told_privately_and_nothing_is_submitted(
    world: World,
) -> None:
    bot = await world.start_bot(default_user_daily_images=1)
    await make_image(world, world.alice, "the only one today")
    before_reset = resets(bot, Period.DAY)()

    it = await world.discord.invoke_slash(
        world.alice, world.channel, "imagine", {"prompt": "one more please"}
    )
    text = await world.refusal(it)

    possible = {before_reset, resets(bot, Period.DAY)()}  # in case midnight passed meanwhile
    assert text in {
        "This request would go over your daily image allowance (1 image a day). "
        "Left today: 0 images and 97 credits; it needs 1 image and 3 credits. "
        f"It resets {format_reset(moment)}."
        for moment in possible
    }
    assert len(world.bfl.submissions) == 1
    assert await bot.services.db.fetch_value("SELECT count(*) FROM jobs") == 1
    assert len(public_messages(world)) == 1  # the first result; no stray "Queued" message
    assert not any("Queued" in m.content for m in public_messages(world))
    # Not even briefly: the refusal comes before anything is posted in the channel.
    ever_posted = world.discord.messages(
        world.channel.id, include_deleted=True, include_ephemeral=False
    )
    assert len(ever_posted) == 1


async def test_usage_shows_spend_what_is_left_and_jobs_in_progress(world: World) -> None:
    bot = await world.start_bot()
    await make_image(world, world.alice, "a quiet harbour")
    day, week, month = (resets(bot, p)() for p in (Period.DAY, Period.WEEK, Period.MONTH))

    text = await ask(world, world.alice, "usage")
    assert text == (
        "**Your usage**\n"
        "**Today**: 1 image · 3 credits ($0.03) — 24 images · 97 credits left"
        f" · resets <t:{day}:R>\n"
        f"**This week**: 1 image · 3 credits ($0.03) — no limit · resets <t:{week}:R>\n"
        f"**This month**: 1 image · 3 credits ($0.03) — 997 credits left · resets <t:{month}:R>\n"
        "Jobs: 0 queued · 0 running"
    )

    world.bfl.latency = 30.0  # keep the next one running while we look
    await world.discord.invoke_slash(world.alice, world.channel, "imagine", {"prompt": "slow"})
    await world.discord.wait_for(lambda: len(world.bfl.submissions) == 2)
    text = await ask(world, world.alice, "usage")
    assert text.splitlines()[1].startswith("**Today**: 2 images · 6 credits ($0.06) — 23 images")
    assert text.splitlines()[-1] == (
        "Jobs: 0 queued · 1 running (holding 3 credits until they finish; anything that fails "
        "is refunded)"
    )
    # Bob's usage is his own.
    text = await ask(world, world.bob, "usage")
    assert "**Today**: 0 images · 0 credits ($0.00) — 25 images · 100 credits left" in text


# --------------------------------------------------------------------------- permissions
async def test_the_moderator_commands_are_hidden_from_members_without_manage_server(
    world: World,
) -> None:
    await world.start_bot()
    for name in ("usage-admin", "quota"):
        command = world.discord.command(name, guild_id=world.guild.id)
        assert command["default_member_permissions"] == str(MANAGE_GUILD)
    assert (
        world.discord.command("usage", guild_id=world.guild.id)["default_member_permissions"]
        is None
    )
    for path, options in MODERATOR_COMMANDS:
        values = {k: (world.alice if v == 0 else v) for k, v in options.items()}
        with pytest.raises(PermissionError):
            await world.discord.invoke_slash(world.bob, world.channel, path, values)


async def test_the_bot_checks_the_permission_itself_when_an_admin_unhides_the_commands(
    world: World,
) -> None:
    """Server admins can let anyone see a command (Integrations settings); the stand-in has
    no such screen, so the registered default is cleared as that override would."""
    bot = await world.start_bot()
    for name in ("usage-admin", "quota"):
        world.discord.command(name, guild_id=world.guild.id)["default_member_permissions"] = None
    for path, options in MODERATOR_COMMANDS:
        values = {k: (world.alice if v == 0 else v) for k, v in options.items()}
        it = await world.discord.invoke_slash(world.bob, world.channel, path, values)
        assert await reply(it) == MISSING_PERMISSION, path
        assert it.original is None or not it.original.attachments
    assert await bot.services.db.fetch_value("SELECT count(*) FROM quota_audit") == 0
    assert await bot.services.db.fetch_value("SELECT count(*) FROM audit_log") == 0
    assert await bot.services.db.fetch_value("SELECT count(*) FROM quota_limits") == 0
    assert await bot.services.db.fetch_value("SELECT count(*) FROM quota_grants") == 0


# --------------------------------------------------------------------------- moderators
async def test_a_moderator_sets_grants_and_resets_and_every_change_is_audited(
    world: World,
) -> None:
    bot = await world.start_bot()
    mod = add_moderator(world)
    alice = f"<@{world.alice.id}>"

    text = await ask(
        world,
        mod,
        "quota set",
        {"window": "day", "kind": "images", "amount": 0, "target": world.alice},
    )
    assert text == (
        f"Set the daily image allowance of {alice} to 0 images (was 25 images, the default)."
    )
    it = await world.discord.invoke_slash(
        world.alice, world.channel, "imagine", {"prompt": "blocked"}
    )
    refusal = await world.refusal(it)
    assert refusal.startswith(
        "This request would go over your daily image allowance (0 images a day). "
        "Left today: 0 images and 100 credits; it needs 1 image and 3 credits."
    )
    assert world.bfl.submissions == []

    text = await ask(
        world, mod, "quota grant", {"member": world.alice, "kind": "images", "amount": 1}
    )
    assert text.startswith(f"Gave {alice} 1 image more today; the extra lapses at the reset at ")
    await make_image(world, world.alice, "thanks to the grant")

    view = await ask(world, mod, "usage-admin user", {"member": world.alice})
    assert view.startswith(
        f"**Usage of {alice}**\n**Today**: 1 image · 3 credits ($0.03) — 0 images · 97 credits left"
    )

    text = await ask(world, mod, "quota reset", {"target": world.alice})
    assert text == f"Reset {alice} to the defaults: removed 1 override and 1 grant."

    rows = await bot.services.db.fetch_all(
        "SELECT actor_id, action, target_id, at FROM quota_audit"
    )
    assert [(r["actor_id"], r["action"], r["target_id"]) for r in rows] == [
        (mod.id, "set", world.alice.id),
        (mod.id, "grant", world.alice.id),
        (mod.id, "reset", world.alice.id),
    ]
    assert all(abs(r["at"] - time.time()) < 60 for r in rows)
    # The same changes, by the same moderator at the same moments, are in the server's one
    # audit log (which posts to the audit channel: see the next test).
    audited = await bot.services.db.fetch_all(
        "SELECT actor_id, action, target_id, at FROM audit_log WHERE action LIKE 'quota %'"
    )
    assert [(r["actor_id"], r["action"], r["target_id"], r["at"]) for r in audited] == [
        (mod.id, f"quota {r['action']}", r["target_id"], r["at"]) for r in rows
    ]

    shown = await ask(world, mod, "quota show")
    assert "No overrides: the defaults apply." in shown
    assert f"<@{mod.id}>: Reset {alice} to the defaults" in shown


async def test_a_moderators_quota_change_is_posted_in_the_audit_channel(world: World) -> None:
    await world.start_bot()
    mod = add_moderator(world)
    log = world.discord.add_text_channel(world.guild.id, "mod-log")
    await ask(world, mod, "settings audit-channel", {"channel": log})
    budget = {"window": "week", "kind": "credits", "amount": 50}
    confirmation = await ask(world, mod, "quota set", budget)
    assert confirmation == (
        "Set this server's weekly credit budget to 50 credits (was unlimited, the default)."
    )
    [post] = await audit_posted(world, log, 1, containing="**quota set**")
    assert post == f"**quota set** · <@{mod.id}> · {confirmation}"
    assert all(m.allowed_mentions == {"parse": []} for m in audit_messages(world, log))


async def test_a_role_allowance_applies_to_members_with_that_role(world: World) -> None:
    bot = await world.start_bot()
    mod = add_moderator(world)
    guests = world.discord.add_role(world.guild.id, "Guests")
    carol = world.discord.add_member(world.guild.id, "carol", roles=[guests.id])
    text = await ask(
        world,
        mod,
        "quota set",
        {"window": "week", "kind": "credits", "amount": 2.5, "target": guests},
    )
    assert text == (
        f"Set the weekly credit allowance for members with <@&{guests.id}> to 2.5 credits "
        "(was no limit from this role)."
    )
    it = await world.discord.invoke_slash(carol, world.channel, "imagine", {"prompt": "hi"})
    assert (await world.refusal(it)).startswith(
        f"This request would go over the weekly credit allowance for your role <@&{guests.id}> "
        "(2.5 credits a week). Left this week: 2.5 credits; it needs 1 image and 3 credits. "
        f"It resets {format_reset(resets(bot, Period.WEEK)())}"
    )
    await make_image(world, world.alice, "alice has no such role")
    assert len(world.bfl.submissions) == 1


async def test_the_server_report_arrives_with_a_png_chart(world: World) -> None:
    await world.start_bot()
    mod = add_moderator(world)
    await make_image(world, world.alice, "one")
    await make_image(world, world.bob, "two")
    await make_image(world, world.alice, "three")

    message = await with_file(
        await world.discord.invoke_slash(mod, world.channel, "usage-admin server")
    )
    lines = message.content.splitlines()
    assert lines[1] == ("Total: 3 images · 9 credits ($0.09) — budget: 9991 credits left")
    assert lines[2:] == [
        "**By model**",
        "FLUX.2 [pro], BFL: 3 images · 9 credits",
        "**By member**",
        f"<@{world.alice.id}>: 2 images · 6 credits",
        f"<@{world.bob.id}>: 1 image · 3 credits",
    ]
    [chart] = message.attachments
    assert chart.filename == "daily-spend.png"
    image = Image.open(io.BytesIO(chart.data))
    assert (image.format, image.size) == ("PNG", (900, 380))


async def test_the_ledger_export_arrives_as_a_csv_file(world: World) -> None:
    bot = await world.start_bot()
    mod = add_moderator(world)
    await make_image(world, world.alice, "for the books")
    job_id = await bot.services.db.fetch_value("SELECT id FROM jobs")
    await bot.services.engine.wait_closed(
        [job_id], 5
    )  # the image is posted just before it is recorded

    message = await with_file(
        await world.discord.invoke_slash(mod, world.channel, "usage-admin export")
    )
    [export] = message.attachments
    assert export.filename.startswith(f"ledger-{world.guild.id}-") and export.filename.endswith(
        ".csv"
    )
    assert message.content.endswith("(UTC): 1 job.")
    rows = list(csv.DictReader(io.StringIO(export.data.decode())))
    assert [
        (
            r["job_id"],
            r["user_id"],
            r["variant"],
            r["status"],
            r["job_state"],
            r["reserved_credits"],
            r["charged_credits"],
            r["charged_images"],
        )
        for r in rows
    ] == [(job_id, str(world.alice.id), "pro", "charged", "delivered", "3", "3", "1")]

    it = await world.discord.invoke_slash(
        mod, world.channel, "usage-admin export", {"start": "yesterday"}
    )
    assert await reply(it) == "The start date must look like 2025-01-31."
