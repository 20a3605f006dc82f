"""Reference images that are small on the wire and huge in memory (40 MP PNGs of 155 KB,
some with a broken zlib checksum that only the end of a full decode finds) must not exhaust
the bot: memory stays bounded, every member gets a friendly answer, nothing is charged, and
another server's /imagine is answered and delivered as usual. And one member's requests,
however they ask, share one pause."""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

from bot.references import DAMAGED_MESSAGE, STILL_CHECKING_MESSAGE
from cogs.generate import SLOW_DOWN_TEXT
from tests.e2e.conftest import World
from tests.fakes.discord_server import InteractionHandle, Upload, User
from tests.hostile_images import bomb_png

COMMANDS = 8
FILES_PER_COMMAND = 4
MAX_GROWTH_MIB = 300
ACKNOWLEDGED_WITHIN = 3.0
DELIVERED_WITHIN = 5.0
LOOKUP_WITHIN = 1.0
ANSWERED_WITHIN = 60.0
# The bot runs in this process (see conftest.World.start_bot), so its memory is ours.
STATUS = "/proc/self/status"


def _status_kib(field: str) -> int:
    with open(STATUS) as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise LookupError(field)


@contextlib.contextmanager
def peak_rss_growth() -> Iterator[list[float]]:
    """The most this process's resident memory grew above where it started (MiB), in the
    list yielded once the block ends. Linux's own high-water mark (reset through
    /proc/self/clear_refs) catches what a sampling thread alone could miss."""
    start = _status_kib("VmRSS")
    try:
        with open("/proc/self/clear_refs", "w") as clear:
            clear.write("5")  # reset VmHWM to the current RSS
        resettable = True
    except OSError:
        resettable = False
    peak = start
    stop = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not stop.wait(0.005):
            peak = max(peak, _status_kib("VmRSS"))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    result: list[float] = []
    try:
        yield result
    finally:
        stop.set()
        sampler.join()
        if resettable:
            peak = max(peak, _status_kib("VmHWM"))
        result.append((peak - start) / 1024)


def hostile_uploads(broken: str) -> dict[str, Upload]:
    """Four 40 MP PNGs of 155 KB each; the one named `broken` has a broken zlib checksum."""
    uploads = {}
    for index in range(1, FILES_PER_COMMAND + 1):
        name = f"bomb-{index}.png"
        data = bomb_png(broken_checksum=name == broken)
        uploads["image" if index == 1 else f"image{index}"] = Upload(name, data, "image/png")
    return uploads


async def private_answer(world: World, it: InteractionHandle) -> str:
    """The private text the interaction ended with, however long the checks took (a wait
    that is bounded: every request is answered well within the bound)."""
    callback = await it.response(timeout=ANSWERED_WITHIN)
    if callback.type != 4:  # "thinking…" while the references are checked
        await it.wait_for(
            lambda: (
                any(m.content for m in it.followups)
                or (it.original is not None and not it.original.loading and it.original.content)
            ),
            timeout=ANSWERED_WITHIN,
        )
    return await world.refusal(it)


async def other_server_imagine(world: World, member: User, channel_id: int) -> tuple[float, float]:
    """(seconds to the acknowledgement, seconds to the delivered image) of a plain /imagine."""
    before = world.newest_message_id()
    started = time.monotonic()
    it = await world.discord.invoke_slash(member, channel_id, "imagine", {"prompt": "a quiet lake"})
    await it.response(timeout=ACKNOWLEDGED_WITHIN)
    acknowledged = time.monotonic() - started
    bot_id = world.discord.application_id
    await world.discord.wait_for_message(
        lambda m: m.author_id == bot_id and bool(m.attachments),
        channel_id=channel_id,
        after=before,
        timeout=DELIVERED_WITHIN,
    )
    return acknowledged, time.monotonic() - started


async def lookup_seconds() -> float:
    """How long a name lookup takes: the default executor that resolves provider names must
    not be stuck behind decodes."""
    started = time.monotonic()
    await asyncio.get_running_loop().getaddrinfo("localhost", 443, type=socket.SOCK_STREAM)
    return time.monotonic() - started


async def hostile_burst(
    world: World, senders: list[User], broken: str, **settings: Any
) -> dict[str, Any]:
    """Every sender sends /flux klein-4b with four hostile PNGs, all at once, while a member
    of another server asks for a plain image. Returns what was seen."""
    other = world.discord.add_guild("Elsewhere")
    other_channel = world.discord.add_text_channel(other.id, "lake")
    carol = world.discord.add_member(other.id, "carol")
    bot = await world.start_bot(dev_guild_id=None, **settings)  # global: both servers
    uploads = hostile_uploads(broken)
    with peak_rss_growth() as growth:
        handles = await asyncio.gather(
            *(
                world.discord.invoke_slash(
                    sender, world.channel, "flux klein-4b", {"prompt": "merge", **uploads}
                )
                for sender in senders
            )
        )
        # Once decoding is under way, the other server's member asks for an image.
        await world.discord.wait_for(lambda: len(world.discord.cdn_requests) >= 1, timeout=10)
        lookup = await lookup_seconds()
        acknowledged, delivered = await other_server_imagine(world, carol, other_channel.id)
        answers = [await private_answer(world, it) for it in handles]
    return {
        "bot": bot,
        "answers": answers,
        "growth_mib": growth[0],
        "acknowledged": acknowledged,
        "delivered": delivered,
        "lookup": lookup,
    }


def assert_others_unaffected(seen: dict[str, Any]) -> None:
    assert seen["growth_mib"] < MAX_GROWTH_MIB
    assert seen["acknowledged"] < ACKNOWLEDGED_WITHIN
    assert seen["delivered"] < DELIVERED_WITHIN
    assert seen["lookup"] < LOOKUP_WITHIN


async def assert_nothing_charged(world: World, seen: dict[str, Any]) -> None:
    db = seen["bot"].services.db
    here = (world.guild.id,)
    assert len(world.bfl.submissions) == 1  # the other server's /imagine only
    assert await db.fetch_value("SELECT count(*) FROM jobs WHERE guild_id = ?", here) == 0
    assert await db.fetch_value("SELECT count(*) FROM ledger WHERE guild_id = ?", here) == 0
    assert await db.fetch_value("SELECT count(*) FROM strikes") == 0


def report(label: str, seen: dict[str, Any]) -> None:
    print(
        f"\n{label}: peak RSS growth {seen['growth_mib']:.0f} MiB, other server acknowledged in "
        f"{seen['acknowledged']:.2f} s and delivered in {seen['delivered']:.2f} s, name lookup "
        f"{seen['lookup']:.2f} s"
    )


async def test_one_member_sending_eight_commands_of_hostile_pngs_is_paced(world: World) -> None:
    """The last file is the broken one, so the first command's other three decode in full."""
    seen = await hostile_burst(
        world, [world.alice] * COMMANDS, "bomb-4.png", button_cooldown_seconds=3
    )
    report("one member, 8 commands x 4 files, paced", seen)
    answers = seen["answers"]
    assert answers.count(DAMAGED_MESSAGE.format(name="bomb-4.png")) == 1, answers
    assert answers.count(SLOW_DOWN_TEXT.format(seconds=3)) == COMMANDS - 1, answers
    assert_others_unaffected(seen)
    await assert_nothing_charged(world, seen)


async def test_without_pacing_a_member_still_has_one_request_checked_at_a_time(
    world: World,
) -> None:
    seen = await hostile_burst(world, [world.alice] * COMMANDS, "bomb-4.png")
    report("one member, 8 commands x 4 files, no pause", seen)
    answers = seen["answers"]
    assert answers.count(DAMAGED_MESSAGE.format(name="bomb-4.png")) == 1, answers
    assert answers.count(STILL_CHECKING_MESSAGE) == COMMANDS - 1, answers
    assert_others_unaffected(seen)
    await assert_nothing_charged(world, seen)


async def test_eight_members_sending_hostile_pngs_at_once_wait_their_turn(world: World) -> None:
    """The budget over all members: 32 files of 160 MB each to decode, one at a time (the
    first refusal in a request spares its files still waiting)."""
    members = [world.discord.add_member(world.guild.id, f"m{n}") for n in range(COMMANDS)]
    seen = await hostile_burst(world, members, "bomb-1.png")
    report("8 members, 1 command x 4 files each", seen)
    assert seen["answers"] == [DAMAGED_MESSAGE.format(name="bomb-1.png")] * COMMANDS
    assert_others_unaffected(seen)
    await assert_nothing_charged(world, seen)


async def test_every_way_of_asking_shares_one_pause_per_member(world: World) -> None:
    """A command, the Edit with FLUX menu, a reply and the Reroll button all count toward one
    member's pause, and are refused privately (a reply publicly, as every reply refusal is)
    while it lasts; another member is not held up."""
    await world.start_bot(button_cooldown_seconds=60)  # long enough never to end mid-test
    before = world.newest_message_id()
    await world.discord.invoke_slash(world.alice, world.channel, "imagine", {"prompt": "a fox"})
    result = await world.result_after(before)
    slow_down = re.compile(r"Slow down a little: you can ask for another image in (\d+) s\.")

    again = await world.discord.invoke_slash(
        world.alice, world.channel, "flux klein-4b", {"prompt": "another fox"}
    )
    text = await world.refusal(again)
    assert (match := slow_down.fullmatch(text)) and 50 <= int(match[1]) <= 60, text
    menu = await world.discord.invoke_message_command(
        world.alice, world.channel, "Edit with FLUX", result
    )
    assert slow_down.fullmatch(await world.refusal(menu))  # no form opened
    job_id = str(result.embeds[0]["footer"]["text"]).removeprefix("Job ")
    reroll = await world.discord.click(world.alice, result, f"flux:reroll:{job_id}")
    assert (await world.refusal(reroll)).startswith("Slow down a little: you can use these")
    reply = await world.discord.post_user_message(
        world.alice, world.channel, "make it blue", reply_to=result, mention_bot=True
    )
    answer = await world.discord.wait_for_message(
        lambda m: m.author_id == world.discord.application_id and m.content.startswith("Slow"),
        channel_id=world.channel.id,
        after=reply,
    )
    assert slow_down.fullmatch(answer.content)

    before = world.newest_message_id()
    await world.discord.invoke_slash(world.bob, world.channel, "imagine", {"prompt": "a hare"})
    await world.result_after(before)
    assert len(world.bfl.submissions) == 2  # Alice's first and Bob's
