"""What one member can and cannot make the bot do: refusals that cost no work, per-member
limits, reply pings, /history privacy, failed database writes and odd input — end to end
through the Discord stand-in."""

from __future__ import annotations

import asyncio
import csv
import io
import sqlite3
from typing import Any

import pytest
from PIL import Image

from bot.errors import INTERNAL_ERROR_TEXT
from cogs.results import NOT_FOUND_TEXT
from tests.e2e.conftest import World
from tests.fakes.discord_server import InteractionHandle, Message, Upload, User

MANAGE_GUILD = 1 << 5
IN_FLIGHT_TEXT = (
    "You already have 2 requests queued or being made, the most one member can have at "
    "once. Wait for one to finish, then try again."
)
COOLDOWN_TEXT = "Slow down a little: you can use these buttons again in 3 s."


def photo(name: str, colour: tuple[int, int, int]) -> Upload:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), colour).save(buffer, "PNG")
    return Upload(name, buffer.getvalue(), "image/png")


def add_moderator(world: World) -> User:
    mods = world.discord.add_role(world.guild.id, "Mods", permissions=MANAGE_GUILD)
    return world.discord.add_member(world.guild.id, "mod", roles=[mods.id])


def job_id_of(message: Message) -> str:
    return str(message.embeds[0]["footer"]["text"]).removeprefix("Job ")


async def make_result(world: World, prompt: str = "a teapot", user: User | None = None) -> Message:
    before = world.newest_message_id()
    await world.discord.invoke_slash(
        user or world.alice, world.channel, "flux klein-4b", {"prompt": prompt, "seed": 5}
    )
    return await world.result_after(before)


async def private_text(it: InteractionHandle) -> str:
    """The content of a direct ephemeral reply."""
    callback = await it.response()
    assert callback.type == 4 and callback.data.get("flags", 0) & 64, callback
    return str(callback.data["content"])


def public_messages(world: World, **options: Any) -> list[Message]:
    return [m for m in world.discord.messages(world.channel.id, **options) if not m.ephemeral]


# ---------------------------------------------------------------------- no work before the checks
async def test_a_request_over_the_allowance_downloads_none_of_its_references(
    world: World,
) -> None:
    bot = await world.start_bot(default_user_daily_images=0)
    it = await world.discord.invoke_slash(
        world.alice,
        world.channel,
        "edit",
        {
            "prompt": "merge",
            "image": photo("a.png", (200, 0, 0)),
            "image2": photo("b.png", (0, 0, 200)),
        },
    )
    text = await private_text(it)  # answered at once: no "thinking…" while downloading
    assert text.startswith("This request would go over your daily image allowance (0 images")
    # The same through a reply: the replied-to image and the reply's own are not fetched.
    source = await world.discord.post_user_message(
        world.bob, world.channel, "my drawing", attachments=[photo("c.png", (0, 200, 0))]
    )
    before = world.newest_message_id()
    await world.discord.post_user_message(
        world.alice,
        world.channel,
        "make it blue",
        reply_to=source,
        mention_bot=True,
        attachments=[photo("d.png", (9, 9, 9))],
    )
    refusal = await world.discord.wait_for_message(
        lambda m: m.author_id == world.discord.application_id,
        channel_id=world.channel.id,
        after=before,
    )
    assert refusal.content.startswith("This request would go over your daily image allowance")
    assert world.discord.cdn_requests == []  # not one reference was downloaded
    assert world.bfl.submissions == []
    assert await bot.services.db.fetch_value("SELECT count(*) FROM jobs") == 0


async def test_a_reroll_or_remix_over_the_allowance_reads_no_stored_image(world: World) -> None:
    bot = await world.start_bot(default_user_daily_images=1, button_cooldown_seconds=0)
    before = world.newest_message_id()
    await world.discord.invoke_slash(
        world.alice, world.channel, "edit", {"prompt": "sepia", "image": photo("a.png", (1, 2, 3))}
    )
    result = await world.result_after(before)
    await bot.services.engine.wait_closed([job_id_of(result)], 5)
    loads: list[str] = []
    original = bot.services.engine.store.inputs

    async def counting(job_id: str) -> Any:
        loads.append(job_id)
        return await original(job_id)

    bot.services.engine.store.inputs = counting  # type: ignore[method-assign]
    it = await world.discord.click(world.alice, result, f"flux:reroll:{job_id_of(result)}")
    assert (await world.refusal(it)).startswith("This request would go over your daily image")
    it = await world.discord.click(world.alice, result, f"flux:remix:{job_id_of(result)}")
    modal = await it.response()
    fields = {"prompt": "sepia, softer", "variant": "pro", "size": "", "seed": ""}
    submitted = await world.discord.submit_modal(
        world.alice, world.channel, modal.data["custom_id"], fields
    )
    assert (await world.refusal(submitted)).startswith("This request would go over your daily")
    assert loads == []  # the stored reference was never read
    assert len(world.bfl.submissions) == 1


# ---------------------------------------------------------------------- per-member limits
async def test_a_member_with_too_many_requests_in_flight_is_told_to_wait(world: World) -> None:
    world.bfl.latency = 1.5
    bot = await world.start_bot(max_jobs_in_flight_per_member=2)
    # Three at the same moment: the cap holds even when every check runs side by side.
    handles = await asyncio.gather(
        *(
            world.discord.invoke_slash(
                world.alice, world.channel, "flux klein-4b", {"prompt": f"n{n}"}
            )
            for n in range(3)
        )
    )
    callbacks = [await it.response() for it in handles]
    refused = [c for c in callbacks if c.data.get("flags", 0) & 64]
    assert [c.data["content"] for c in refused] == [IN_FLIGHT_TEXT]
    assert (
        await bot.services.db.fetch_value(
            "SELECT count(*) FROM jobs WHERE user_id = ?", (world.alice.id,)
        )
        == 2
    )
    # Somebody else is not held up by Alice's requests.
    before = world.newest_message_id()
    await world.discord.invoke_slash(world.bob, world.channel, "flux klein-4b", {"prompt": "bob"})
    await world.result_after(before)
    # Once hers are finished, Alice may ask again.
    job_ids = [
        r["id"]
        for r in await bot.services.db.fetch_all(
            "SELECT id FROM jobs WHERE user_id = ?", (world.alice.id,)
        )
    ]
    await bot.services.engine.wait_closed(job_ids, 15)
    again = await world.discord.invoke_slash(
        world.alice, world.channel, "flux klein-4b", {"prompt": "later"}
    )
    assert not ((await again.response()).data.get("flags", 0) & 64)


async def test_result_buttons_have_a_short_cooldown_per_member(world: World) -> None:
    await world.start_bot(button_cooldown_seconds=3)
    # Made by someone else: a member's own command counts toward the same pause.
    result = await make_result(world, user=world.discord.add_member(world.guild.id, "carol"))
    job_id = job_id_of(result)
    first = await world.discord.click(world.bob, result, f"flux:reroll:{job_id}")
    assert not ((await first.response()).data.get("flags", 0) & 64)  # the reroll started
    again = await world.discord.click(world.bob, result, f"flux:reroll:{job_id}")
    assert await private_text(again) == COOLDOWN_TEXT
    remix = await world.discord.click(world.bob, result, f"flux:remix:{job_id}")
    assert await private_text(remix) == COOLDOWN_TEXT
    # The history button starts nothing and is not slowed; another member is not either.
    chain = await world.discord.click(world.bob, result, f"flux:chain:{job_id}")
    assert (await private_text(chain)).startswith("**This image's history**")
    other = await world.discord.click(world.alice, result, f"flux:remix:{job_id}")
    assert (await other.response()).type == 9  # the Remix form
    await world.discord.wait_for(lambda: len(world.bfl.submissions) == 2, timeout=10)
    await asyncio.sleep(0.3)
    assert len(world.bfl.submissions) == 2  # the first result and Bob's one reroll


# ---------------------------------------------------------------------- replies
async def test_a_reply_ping_without_a_mention_in_the_text_starts_nothing(world: World) -> None:
    await world.start_bot()
    result = await make_result(world, "a lighthouse")
    thanks = await world.discord.post_user_message(
        world.bob, world.channel, "thanks!", reply_to=result, reply_ping=True
    )
    assert world.discord.bot_id in thanks.mentions  # Discord counts the ping as a mention
    before = world.newest_message_id()
    await world.discord.post_user_message(
        world.bob, world.channel, "now at night", reply_to=result, mention_bot=True
    )
    await world.result_after(before)
    await asyncio.sleep(0.3)
    assert [s.body["prompt"] for s in world.bfl.submissions] == ["a lighthouse", "now at night"]
    assert not [
        m
        for m in public_messages(world, include_deleted=True)
        if m.message_reference and m.message_reference.get("message_id") == thanks.id
    ]


# ---------------------------------------------------------------------- /history
async def test_history_in_direct_messages_shows_a_dm_chain_to_its_owner_only(
    world: World,
) -> None:
    bot = await world.start_bot(dev_guild_id=None)  # global commands: offered in DMs
    mod = add_moderator(world)
    it = await world.discord.invoke_slash(mod, world.channel, "settings dms", {"allowed": True})
    await it.response()
    alice_dm, bob_dm = world.discord.open_dm(world.alice), world.discord.open_dm(world.bob)
    prompt = "**bold** [click here](https://evil.example) @everyone"
    await world.discord.invoke_slash(world.alice, alice_dm, "imagine", {"prompt": prompt})
    await world.discord.wait_for_message(
        lambda m: bool(m.attachments), channel_id=alice_dm.id, timeout=10
    )
    job_id = await bot.services.db.fetch_value("SELECT id FROM jobs WHERE guild_id IS NULL")
    assert job_id

    for where in (bob_dm, world.channel):  # another member, in DMs or on the server
        it = await world.discord.invoke_slash(world.bob, where, "history", {"result": job_id})
        assert await private_text(it) == NOT_FOUND_TEXT

    it = await world.discord.invoke_slash(world.alice, alice_dm, "history", {"result": job_id})
    chain = await private_text(it)
    assert chain.splitlines()[0] == "**This image's history** (1 step):"
    # Quoted inertly: no bold, no masked link, no mass mention.
    assert "\\*\\*bold\\*\\* \\[click here](https://evil.example) @\u200beveryone" in chain
    it = await world.discord.invoke_slash(world.alice, alice_dm, "history")
    assert "\\*\\*bold\\*\\*" in await private_text(it)


async def test_history_of_someone_elses_server_result_quotes_the_prompt_inertly(
    world: World,
) -> None:
    await world.start_bot()
    result = await make_result(world, "__underlined__ `code` ||spoiler||", user=world.bob)
    it = await world.discord.invoke_slash(
        world.alice, world.channel, "history", {"result": job_id_of(result)}
    )
    line = (await private_text(it)).splitlines()[1]
    assert line.startswith("1. \\_\\_underlined\\_\\_ \\`code\\` \\|\\|spoiler\\|\\| — ")


# ---------------------------------------------------------------------- failed database writes
def locked(*args: object, **kwargs: object) -> Any:
    raise sqlite3.OperationalError("database is locked")


async def test_a_failed_audit_write_does_not_fail_an_accepted_job(
    world: World, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    bot = await world.start_bot()

    async def audit_down(*args: object, **kwargs: object) -> None:
        locked()

    monkeypatch.setattr(bot.services.audit, "record", audit_down)
    before = world.newest_message_id()
    it = await world.discord.invoke_slash(
        world.alice, world.channel, "edit", {"prompt": "winter", "image": photo("a.png", (5, 5, 5))}
    )
    result = await world.result_after(before)
    assert result.id == (await it.wait_original(lambda m: bool(m.attachments))).id
    shown = [m.content for m in [it.original, *it.followups] if m is not None]
    assert INTERNAL_ERROR_TEXT not in shown
    # The job is marked delivered just after its message is posted.
    for _ in range(100):
        if await bot.services.db.fetch_value("SELECT state FROM jobs") == "delivered":
            break
        await asyncio.sleep(0.02)
    assert await bot.services.db.fetch_value("SELECT state FROM jobs") == "delivered"
    assert await bot.services.db.fetch_value("SELECT status FROM ledger") == "charged"
    assert "audit record" in caplog.text


async def test_a_job_that_could_not_be_written_leaves_nothing_public_and_says_so(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    bot = await world.start_bot()

    async def create_fails(*args: object, **kwargs: object) -> None:
        locked()

    monkeypatch.setattr(bot.services.engine.store, "create_then", create_fails)
    # With a reference the interaction is answered "thinking…" publicly first.
    it = await world.discord.invoke_slash(
        world.alice, world.channel, "edit", {"prompt": "winter", "image": photo("a.png", (5, 5, 5))}
    )
    assert await world.refusal(it) == INTERNAL_ERROR_TEXT  # also: no public deferral stays
    # A reply: the apology replies in the channel; nothing says "Queued".
    source = await world.discord.post_user_message(
        world.bob, world.channel, "", attachments=[photo("b.png", (7, 7, 7))]
    )
    before = world.newest_message_id()
    await world.discord.post_user_message(
        world.alice, world.channel, "in autumn", reply_to=source, mention_bot=True
    )
    apology = await world.discord.wait_for_message(
        lambda m: m.author_id == world.discord.application_id,
        channel_id=world.channel.id,
        after=before,
    )
    assert apology.content == INTERNAL_ERROR_TEXT
    await asyncio.sleep(0.3)
    bot_posts = [m for m in public_messages(world) if m.author_id == world.discord.application_id]
    assert [m.content for m in bot_posts] == [INTERNAL_ERROR_TEXT]
    assert await bot.services.db.fetch_value("SELECT count(*) FROM jobs") == 0
    assert await bot.services.db.fetch_value("SELECT count(*) FROM ledger") == 0


# ---------------------------------------------------------------------- odd input
async def test_remix_with_a_superscript_seed_is_refused_clearly(world: World) -> None:
    await world.start_bot()
    result = await make_result(world)
    it = await world.discord.click(world.alice, result, f"flux:remix:{job_id_of(result)}")
    modal = await it.response()
    fields = {"prompt": "a teapot", "variant": "klein-4b", "size": "", "seed": "²"}
    submitted = await world.discord.submit_modal(
        world.alice, world.channel, modal.data["custom_id"], fields
    )
    assert await world.refusal(submitted) == (
        "The seed must be a whole number, or empty for a new one."
    )
    assert len(world.bfl.submissions) == 1


async def test_a_ledger_export_ending_at_the_end_of_the_calendar_stops_today(
    world: World,
) -> None:
    await world.start_bot()
    await make_result(world)
    mod = add_moderator(world)
    it = await world.discord.invoke_slash(
        mod, world.channel, "usage-admin export", {"start": "9999-12-31", "end": "9999-12-31"}
    )
    assert (await private_text(it)).startswith("The start date is after today")
    it = await world.discord.invoke_slash(
        mod, world.channel, "usage-admin export", {"end": "9999-12-31"}
    )
    await it.response()
    message = await it.wait_original(lambda m: bool(m.attachments), timeout=10)
    rows = list(csv.DictReader(io.StringIO(message.attachments[0].data.decode())))
    assert len(rows) == 1
    assert message.content.startswith("Ledger from ")
    assert "9999" not in message.content


async def test_a_request_over_a_studio_budget_downloads_none_of_its_references(
    world: World,
) -> None:
    from tests.e2e.test_studio import imagine_in, open_studio

    await world.start_bot()
    thread, _ = await open_studio(world, world.alice, "pixel art", budget=5)
    await imagine_in(world, world.bob, thread, "a castle")  # more than half the budget
    cdn_before = list(world.discord.cdn_requests)
    it = await world.discord.invoke_slash(
        world.alice, thread, "edit", {"prompt": "a moat", "image": photo("m.png", (3, 3, 3))}
    )
    assert (await private_text(it)).startswith("This image would go over this studio's budget")
    assert world.discord.cdn_requests == cdn_before
    assert len(world.bfl.submissions) == 1


async def test_a_request_that_could_not_be_held_for_review_leaves_no_waiting_message(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.e2e.test_approvals import enable_approvals, setup_world

    review, _, trusted = setup_world(world)
    bot = await world.start_bot()
    await enable_approvals(bot, world, review, trusted)

    async def hold_fails(*args: object, **kwargs: object) -> None:
        locked()

    monkeypatch.setattr(bot.services.approvals, "hold", hold_fails)
    it = await world.discord.invoke_slash(world.alice, world.channel, "imagine", {"prompt": "x"})
    assert await world.refusal(it) == INTERNAL_ERROR_TEXT
    source = await world.discord.post_user_message(
        world.bob, world.channel, "", attachments=[photo("b.png", (7, 7, 7))]
    )
    before = world.newest_message_id()
    await world.discord.post_user_message(
        world.alice, world.channel, "in autumn", reply_to=source, mention_bot=True
    )
    await world.discord.wait_for_message(
        lambda m: m.content == INTERNAL_ERROR_TEXT, channel_id=world.channel.id, after=before
    )
    waiting = [m for m in public_messages(world) if "Waiting for a moderator" in m.content]
    assert waiting == []  # posted before the hold failed, then taken back
    assert [
        m.content
        for m in public_messages(world, include_deleted=True)
        if "Waiting for a moderator" in m.content and m.deleted
    ] != []
    assert await bot.services.db.fetch_value("SELECT count(*) FROM jobs") == 0


async def test_a_prompt_shown_on_its_result_cannot_pass_for_the_bots_own_text(
    world: World,
) -> None:
    await world.start_bot()
    prompt = "[free nitro](https://evil.example) **now** <@&112233445566778899>"
    before = world.newest_message_id()
    await world.discord.invoke_slash(world.alice, world.channel, "imagine", {"prompt": prompt})
    result = await world.result_after(before)
    [submission] = world.bfl.submissions
    assert submission.body["prompt"] == prompt  # sent as typed
    description = result.embeds[0]["description"]
    # An escaped "[" is no masked link, escaped "**" no bold, and the role shows as text.
    assert description.startswith(r"\[free nitro](https://evil.example) \*\*now\*\*")
    assert "<@&112233445566778899>" not in description
