"""A moderator's hostile banned term must not freeze the bot for anyone else: members'
commands are still acknowledged and /healthz still answers."""

from __future__ import annotations

import time

import httpx

from bot.moderation.strikes import REFUSED_TEXT
from tests.e2e.conftest import World
from tests.e2e.test_community import add_moderator, refused, say

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
