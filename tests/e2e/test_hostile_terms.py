"""A moderator's hostile banned terms must not freeze the bot for anyone else: members'
commands are still acknowledged, /healthz still answers, and another server's images arrive
in their usual time."""

from __future__ import annotations

import random
import time

import httpx

from bot.moderation.strikes import BUSY_TEXT, REFUSED_TEXT
from tests.e2e.conftest import World
from tests.e2e.test_community import add_moderator, refused, say
from tests.fakes.discord.models import Channel, InteractionHandle, Message

# Each takes a backtracking engine minutes (or far longer) on a few dozen to a few hundred
# characters of "a": exponential alternatives, stacked repetitions, and a plain term whose
# letters each repeat (a+a+a+…b+).
HOSTILE_REGEXES = ("(a|aa)+b", "(a|a)*b", "(?:a|ab)+c", "a*a*a*a*a*a*a*a*b")
HOSTILE_PLAIN = "aaaaaaaab"
# As stored by an older version that accepted it; RE2 can't run a backreference.
STORED_BACKREFERENCE = r"(a|aa)+\1b"
ACKNOWLEDGED_WITHIN = 3.0


async def test_hostile_terms_do_not_delay_other_members_or_health(world: World) -> None:
    bot = await world.start_bot()
    await world.stop_bot(bot)
    await world.write_sql(
        "INSERT INTO banned_terms (guild_id, pattern, is_regex, added_by, added_at)"
        " VALUES (?,?,1,1,0)",
        (world.guild.id, STORED_BACKREFERENCE),
    )
    bot = await world.start_bot()  # the unusable stored term is skipped, not fatal
    mod = add_moderator(world)
    for pattern in HOSTILE_REGEXES:
        added = await say(world, mod, "settings terms-add", term=pattern, regex=True)
        assert added.startswith(f"Added the regular expression `{pattern}`."), added
    assert (await say(world, mod, "settings terms-add", term=HOSTILE_PLAIN)).startswith(
        f"Added the term `{HOSTILE_PLAIN}`."
    )
    refusal = await say(world, mod, "settings terms-add", term=r"(a)\1", regex=True)
    assert refusal.startswith("That regular expression uses a backreference"), refusal
    listed = await say(world, mod, "settings terms-list")
    assert f"`{STORED_BACKREFERENCE}`" in listed  # still listed, so it can be removed

    # The near miss that takes a backtracking engine longest: a long run of "a".
    before = world.newest_message_id()
    started = time.monotonic()
    it = await world.discord.invoke_slash(
        world.bob, world.channel, "imagine", {"prompt": "a" * 3900}
    )
    await it.response(timeout=ACKNOWLEDGED_WITHIN)
    assert time.monotonic() - started < ACKNOWLEDGED_WITHIN
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{bot.services.web.port}") as http:
        health = await http.get("/healthz", timeout=ACKNOWLEDGED_WITHIN)
    assert health.status_code == 200
    result = await world.result_after(before)
    assert result.attachments

    # The hostile terms still do their job.
    for prompt in ("aaab", "aaaaaaaaab"):
        text = await refused(world, bot, world.alice, world.channel, prompt=prompt)
        assert text.startswith(REFUSED_TEXT), prompt
    assert await bot.services.db.fetch_value("SELECT count(*) FROM strikes") == 2


# Terms that were expensive for RE2 itself (bench/terms.py): expressions that need every
# position of their last 10-20 characters remembered, and plain words of l and i ("l" also
# accepts "i", and every letter may repeat). 500 of them cost seconds of CPU per prompt.
REMEMBERING = [f"[ab]*{'ab'[n % 2]}[ab]{{{10 + n % 10}}}z{n}" for n in range(250)]
L_AND_I = ["".join(random.Random(n).choices("li", k=20 + n % 20)) + "x" for n in range(250)]
# Single letters, one after "a", and a leet token: each prompt is checked in six forms.
SIX_FORMS = " n1 a b c"
PROMPTS = 12


def hostile_prompt(n: int) -> str:
    letters = "ab" if n % 2 else "li"  # what keeps one family or the other busiest
    rng = random.Random(n)
    return "".join(rng.choice(letters) for _ in range(4000 - len(SIX_FORMS))) + SIX_FORMS


async def result_in(world: World, channel: Channel, after: int, within: float) -> Message:
    bot_id = world.discord.application_id
    return await world.discord.wait_for_message(
        lambda m: m.author_id == bot_id and bool(m.attachments) and not m.ephemeral,
        channel_id=channel.id,
        after=after,
        timeout=within,
    )


async def imagine_in(world: World, channel: Channel, user_id: int, prompt: str) -> float:
    """Seconds from /imagine to its image; the acknowledgement must come within 3 s."""
    messages = world.discord.messages(channel.id, include_deleted=True)
    before = messages[-1].id if messages else 0
    started = time.monotonic()
    it = await world.discord.invoke_slash(user_id, channel, "imagine", {"prompt": prompt})
    await it.response(timeout=ACKNOWLEDGED_WITHIN)
    assert time.monotonic() - started < ACKNOWLEDGED_WITHIN
    await result_in(world, channel, before, within=30)
    return time.monotonic() - started


async def is_refused(it: InteractionHandle) -> bool:
    """Whether an acknowledged request was refused privately rather than accepted."""
    callback = await it.response(timeout=ACKNOWLEDGED_WITHIN)
    return callback.type == 4 and bool((callback.data or {}).get("flags", 0) & 64)


async def test_500_hostile_terms_on_one_server_do_not_hold_another_servers_imagine(
    world: World,
) -> None:
    # Server A's moderator stored 500 expensive terms before the size budget existed; its
    # members then send 12 prompts of 4,000 characters made to keep those terms busiest.
    elsewhere = world.discord.add_guild("Elsewhere")
    channel_b = world.discord.add_text_channel(elsewhere.id, "art")
    carol = world.discord.add_member(elsewhere.id, "carol")
    members_a = [world.discord.add_member(world.guild.id, f"m{n}") for n in range(PROMPTS)]
    bot = await world.start_bot(dev_guild_id=None)  # commands in every server
    db = bot.services.db
    for regex, word in zip(REMEMBERING, L_AND_I, strict=True):
        for pattern, is_regex in ((regex, 1), (word, 0)):
            await db.execute(
                "INSERT INTO banned_terms (guild_id, pattern, is_regex, added_by, added_at)"
                " VALUES (?,?,?,1,0)",
                (world.guild.id, pattern, is_regex),
            )
    await bot.services.moderation.load()
    not_in_force = await bot.services.moderation.terms_not_in_force(world.guild.id)
    assert 0 < len(not_in_force) < 500  # the oldest that fit the budget are in force

    # A moderator makes room for one more term (the newest, not in force anyway); adding one
    # is refused with the reason.
    mod = add_moderator(world)
    assert (await say(world, mod, "settings terms-remove", term=L_AND_I[-1])).startswith("Removed")
    left_out = len(not_in_force) - 1
    refusal = await say(world, mod, "settings terms-add", term="(?:ab){9}z", regex=True)
    assert refusal.startswith(
        "This server's banned terms are already over their size budget: "
        f"{left_out} newer terms are left out, not in force"
    ), refusal

    usual = await imagine_in(world, channel_b, carol.id, "a lighthouse at dusk")

    before_a = world.newest_message_id()
    hostile: list[InteractionHandle] = [
        await world.discord.invoke_slash(member, world.channel, "imagine", {"prompt": prompt})
        for member, prompt in zip(members_a, map(hostile_prompt, range(PROMPTS)), strict=True)
    ]
    loaded = await imagine_in(world, channel_b, carol.id, "a lighthouse at dawn")
    # B's image came while some of A's prompts were still waiting to be checked.
    assert any(not it.callbacks for it in hostile)
    assert loaded < usual + 1.5, (usual, loaded)

    # A's own members are answered in time too (Discord's 3 s): each prompt passes (none holds
    # a term) and becomes an image, or, while the server's checks are queued too long, is
    # refused as busy, costing nothing.
    answers = [await world.refusal(it) if await is_refused(it) else None for it in hostile]
    busy = [text for text in answers if text is not None]
    assert busy == [BUSY_TEXT] * len(busy)
    bot_id = world.discord.application_id

    def images_a() -> int:
        return sum(
            m.id > before_a and m.author_id == bot_id and bool(m.attachments)
            for m in world.discord.messages(world.channel.id)
        )

    await world.discord.wait_for(lambda: images_a() == PROMPTS - len(busy), timeout=60)
    assert images_a() > 0  # at least the first check had its turn
    assert await db.fetch_value("SELECT count(*) FROM jobs") == 2 + images_a()
    assert await db.fetch_value("SELECT count(*) FROM strikes") == 0
