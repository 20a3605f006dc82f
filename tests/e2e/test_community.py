"""/settings and /mod end to end: moderators change a server's rules on the Discord stand-in,
and members meet those rules through /imagine (the BFL stand-in behind it)."""

from __future__ import annotations

import io
import time
from typing import Any

import pytest
from PIL import Image

from bot.community.policy import DMS_CLOSED_TEXT
from bot.moderation.strikes import REFUSED_TEXT, WARNING_TEXT
from bot.moderation.terms import DEFAULT_TERMS
from cogs.client import FluxcordBot
from tests.e2e.conftest import World
from tests.fakes.bfl_server import Submission
from tests.fakes.discord_server import Channel, InteractionHandle, Message, Upload, User

MANAGE_GUILD = 1 << 5
MISSING_PERMISSION = "You are missing Manage Server permission(s) to run this command."
BLOCKED = "You are blocked from making images on this server."
BLOCKED_UNTIL = "You are blocked from making images on this server until <t:"


# --------------------------------------------------------------------------- helpers
def add_moderator(world: World) -> User:
    mods = world.discord.add_role(world.guild.id, "Mods", permissions=MANAGE_GUILD)
    return world.discord.add_member(world.guild.id, "mod", roles=[mods.id])


async def answer(it: InteractionHandle) -> dict[str, Any]:
    """The data of a command's direct, ephemeral reply."""
    callback = await it.response()
    assert callback.type == 4, callback
    assert callback.data is not None and callback.data.get("flags", 0) & 64, "must be ephemeral"
    return callback.data


async def say(world: World, who: User, path: str, /, **options: Any) -> str:
    """Run a command in the art channel; its ephemeral reply text."""
    it = await world.discord.invoke_slash(who, world.channel, path, options)
    return str((await answer(it)).get("content") or "")


def newest_id(world: World, channel: Channel) -> int:
    messages = world.discord.messages(channel.id, include_deleted=True)
    return messages[-1].id if messages else 0


async def imagine(
    world: World, user: User, channel: Channel, command: str = "imagine", **options: Any
) -> Submission:
    """A request that goes through: the image arrives in `channel`; what the BFL got."""
    before = newest_id(world, channel)
    submitted = len(world.bfl.submissions)
    await world.discord.invoke_slash(user, channel, command, options)
    await world.discord.wait_for_message(
        lambda m: (
            m.author_id == world.discord.application_id and bool(m.attachments) and not m.ephemeral
        ),
        channel_id=channel.id,
        after=before,
        timeout=10,
    )
    return world.bfl.submissions[submitted]


async def refused(
    world: World,
    bot: FluxcordBot,
    user: User,
    channel: Channel,
    *,
    looked_up: bool = False,
    **options: Any,
) -> str:
    """A request that is refused: the private text, and proof that nothing happened.
    `looked_up`: a direct message whose membership Discord was asked about, so the request
    was acknowledged ("thinking…", seen by the member alone) and that answer removed."""
    jobs = await bot.services.db.fetch_value("SELECT count(*) FROM jobs")
    ledger = await bot.services.db.fetch_value("SELECT count(*) FROM ledger")
    submissions = len(world.bfl.submissions)
    public = len(world.discord.messages(channel.id, include_deleted=True, include_ephemeral=False))
    early = answered_before_checks(bot)
    it = await world.discord.invoke_slash(user, channel, "imagine", options)
    text = await world.refusal(it)
    assert await bot.services.db.fetch_value("SELECT count(*) FROM jobs") == jobs
    assert await bot.services.db.fetch_value("SELECT count(*) FROM ledger") == ledger
    assert len(world.bfl.submissions) == submissions
    ever = world.discord.messages(channel.id, include_deleted=True, include_ephemeral=False)
    if looked_up:
        assert channel.guild_id is None, "only a direct message is acknowledged before a refusal"
        assert [m.deleted for m in ever[public:]] == [True], "the deferral is gone"
    elif answered_before_checks(bot) > early:
        # The machine was busy (the event loop lagged), so the bot said "thinking…" before
        # its checks, as it must to keep Discord's 3 s; the refusal removed that answer.
        assert [m.deleted for m in ever[public:]] == [True], "the early answer is gone"
    else:
        assert len(ever) == public, "nothing public, not even briefly"
    return text


def answered_before_checks(bot: FluxcordBot) -> float:
    value = bot.services.metrics.registry.get_sample_value("fluxcord_answered_before_checks_total")
    return value or 0.0


def png_upload(name: str = "photo.png") -> Upload:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 40, 40)).save(buffer, "PNG")
    return Upload(name, buffer.getvalue(), "image/png")


def audit_messages(world: World, channel: Channel) -> list[Message]:
    return [m for m in world.discord.messages(channel.id) if not m.ephemeral]


async def audit_posted(
    world: World, channel: Channel, count: int, *, containing: str = ""
) -> list[str]:
    """The audit channel's posts once `count` of them (containing the text) have arrived:
    they go out in the background, at the channel's pace, after the command's answer."""

    def posted() -> list[str] | None:
        texts = [m.content for m in audit_messages(world, channel) if containing in m.content]
        return texts if len(texts) >= count else None

    return await world.discord.wait_for(posted, timeout=30)


# --------------------------------------------------------------------------- settings
async def test_a_moderator_changes_every_setting_and_each_change_is_shown_and_audited(
    world: World,
) -> None:
    bot = await world.start_bot()
    mod = add_moderator(world)
    log = world.discord.add_text_channel(world.guild.id, "mod-log")
    studio = world.discord.add_text_channel(world.guild.id, "studio")
    trusted = world.discord.add_role(world.guild.id, "Trusted")
    m, art = f"<@{mod.id}>", f"<#{world.channel.id}>"

    steps: list[tuple[str, dict[str, Any], str]] = [
        (
            "settings audit-channel",
            {"channel": log},
            f"Audit channel: <#{log.id}> (was off). The log is kept either way; this only "
            "chooses where it is posted.",
        ),
        (
            "settings channel-add",
            {"channel": world.channel},
            f"Enabled channels: {art} (was all). Requests in other channels are refused; "
            "threads follow their channel.",
        ),
        (
            "settings channel-add",
            {"channel": studio},
            f"Enabled channels: {art}, <#{studio.id}> (was {art}). Requests in other channels "
            "are refused; threads follow their channel.",
        ),
        (
            "settings channel-remove",
            {"channel": studio},
            f"Enabled channels: {art} (was {art}, <#{studio.id}>).",
        ),
        (
            "settings variants",
            {"allowed": "pro, flex"},
            "Allowed variants: pro, flex (was all).",
        ),
        (
            "settings variants",
            {"default": "flex"},
            "Default variant: flex (was the bot's default, pro).",
        ),
        (
            "settings limits",
            {"max_megapixels": 2.5, "safety_cap": 3},
            "Megapixel cap: 2.5 MP (was no cap); Safety cap: at most 3 (was no cap).",
        ),
        (
            "settings dms",
            {"allowed": True},
            "Direct messages: allowed for members (was not allowed).",
        ),
        (
            "settings uploads",
            {"allow_outside_age_restricted": False},
            "Editing uploaded images: only in age-restricted channels (was anywhere).",
        ),
        (
            "settings approval",
            {"enabled": True, "channel": log, "trusted_role": trusted},
            f"Approval queue: on (was off); Approval channel: <#{log.id}> (was not set); "
            f"Trusted roles: <@&{trusted.id}> (was none).",
        ),
        (
            "settings trusted-remove",
            {"role": trusted},
            f"Trusted roles: none (was <@&{trusted.id}>).",
        ),
        (
            "settings private-results",
            {"private": True, "channel": world.channel},
            f"Private results in: {art} (was no channel). Studios and requests held for "
            "approval stay public.",
        ),
        (
            "settings private-results",
            {"private": True},
            "Private results: everywhere (was only where chosen). Studios and requests held "
            "for approval stay public.",
        ),
        (
            "settings strikes",
            {"warn": 2, "temp_block": 4, "block": 6, "temp_block_hours": 0.5},
            "Warning at: 2 refused prompts (was 1 refused prompt); Temporary block at: 4 refused "
            "prompts (was 3 refused prompts); Block at: 6 refused prompts (was 5 refused "
            "prompts); Temporary block length: 30 min (was 24 h). Strikes only count until a "
            "moderator unblocks the member.",
        ),
        (
            "settings showcase",
            {"channel": studio},
            f"Showcase channel: <#{studio.id}> (was off). Results are shared with their Share "
            "to showcase button.",
        ),
    ]
    for path, options, expected in steps:
        assert await say(world, mod, path, **options) == expected, path

    # The same value again changes (and logs) nothing.
    assert await say(world, mod, "settings dms", allowed=True) == (
        "Nothing changed (Direct messages: allowed for members)."
    )

    terms = [
        (
            "settings terms-add",
            {"term": "  Dragon  "},
            "Added the term `Dragon`. Prompts that contain it are refused with a neutral "
            "message and count as a strike.",
        ),
        (
            "settings terms-add",
            {"term": r"\bwyrms?\b", "regex": True},
            r"Added the regular expression `\bwyrms?\b`. Prompts that contain it are refused "
            "with a neutral message and count as a strike.",
        ),
        (
            "settings terms-remove",
            {"term": r"\bwyrms?\b"},
            r"Removed `\bwyrms?\b` from this "
            "server's banned terms.",
        ),
    ]
    for path, options, expected in terms:
        assert await say(world, mod, path, **options) == expected, path
    listing = await say(world, mod, "settings terms-list")
    assert listing.startswith("**This server's banned terms** (1)\n- `Dragon`\n\nA built-in list")

    data = await answer(await world.discord.invoke_slash(mod, world.channel, "settings show"))
    [embed] = data["embeds"]
    fields = {f["name"]: f["value"] for f in embed["fields"]}
    assert fields == {
        "Where": f"Enabled channels: {art} (threads follow their channel)",
        "Models": "Allowed variants: pro, flex\nDefault variant: flex",
        "Limits": "Megapixel cap: 2.5 MP\nSafety cap: at most 3",
        "Zoom out, pan, Make square": "Zoom out / pan mode: high fidelity",
        "Direct messages": "allowed for members",
        "Editing uploaded images": "only in age-restricted channels",
        "Audit channel": f"<#{log.id}>",
        "Private results": f"Private results: everywhere\nPrivate results in: {art}",
        "Approval queue": (
            f"Approval queue: on\nApproval channel: <#{log.id}>\nTrusted roles: none"
        ),
        "Showcase channel": f"<#{studio.id}>",
        "Strikes": (
            "Warning at: 2 refused prompts\nTemporary block at: 4 refused prompts\n"
            "Block at: 6 refused prompts\nTemporary block length: 30 min"
        ),
        "Banned terms": (
            f"1 server term, plus the built-in list of {len(DEFAULT_TERMS)} (see /settings "
            "terms-list)"
        ),
    }

    # Every change is in the table, by whom, and was posted to the audit channel.
    rows = await bot.services.db.fetch_all(
        "SELECT actor_id, action, detail FROM audit_log ORDER BY id"
    )
    assert [(r["actor_id"], r["action"]) for r in rows] == [
        *[(mod.id, "settings")] * len(steps),
        (mod.id, "banned term added"),
        (mod.id, "banned term added"),
        (mod.id, "banned term removed"),
    ]
    assert rows[4]["detail"] == "Allowed variants: pro, flex (was all)"
    assert [r["detail"] for r in rows[-3:]] == [
        "term `Dragon`",
        r"regular expression `\bwyrms?\b`",
        r"`\bwyrms?\b`",
    ]
    posted = await audit_posted(world, log, len(rows))
    assert posted == [f"**{r['action']}** · {m} · {r['detail']}" for r in rows]
    assert all(message.allowed_mentions == {"parse": []} for message in audit_messages(world, log))
    # Settings survive a restart (they are read back from the table).
    await world.stop_bot(bot)
    bot = await world.start_bot()
    assert bot.services.server_settings.get(world.guild.id).allowed_variants == {"pro", "flex"}
    assert [t.pattern for t in bot.services.moderation.server_terms(world.guild.id)] == ["Dragon"]


async def test_invalid_settings_are_explained_and_change_nothing(world: World) -> None:
    bot = await world.start_bot()
    mod = add_moderator(world)
    cases: list[tuple[str, dict[str, Any], str]] = [
        (
            "settings variants",
            {"allowed": "pro, turbo"},
            "There is no variant called turbo. Choose from: pro, max, flex, klein-4b, klein-9b.",
        ),
        (
            "settings variants",
            {"allowed": "flex", "default": "pro"},
            "The default (pro) must be one of the allowed variants.",
        ),
        ("settings variants", {}, "Give the allowed variants, a default, or both."),
        (
            "settings limits",
            {"max_megapixels": 0.01},
            "The megapixel cap must be between 0.05 and 16.",
        ),
        ("settings limits", {}, "Give max_megapixels, safety_cap or both."),
        (
            "settings strikes",
            {"warn": 4, "temp_block": 3},
            "Strike thresholds must grow: warning ≤ temporary block ≤ block, from 1.",
        ),
        (
            "settings approval",
            {"enabled": True},
            "Choose the moderators' channel where requests wait for review.",
        ),
        (
            "settings channel-remove",
            {"channel": world.channel},
            "Every channel is enabled now. Choose the channels to keep with /settings "
            "channel-add; the others are then off.",
        ),
        (
            "settings trusted-remove",
            {"role": world.guild.id},
            f"<@&{world.guild.id}> isn't a trusted role.",
        ),
        (
            "settings terms-add",
            {"term": r"(\w+) \1", "regex": True},
            "That regular expression uses a backreference, such as \\1 or (?P=name). Banned "
            "terms are matched with RE2, an engine that always finishes quickly whatever the "
            "pattern, so backreferences, lookaround, possessive or atomic groups and \\Z (write "
            "\\z) can't be used. Rewrite it without them.",
        ),
        (
            "settings terms-add",
            {"term": "[unclosed", "regex": True},
            "That regular expression is not valid: unterminated character set.",
        ),
        (
            "settings terms-add",
            {"term": "..."},
            "That term has no letters or numbers left once accents, symbols and spacing are "
            "removed, so it could never match.",
        ),
        (
            "settings terms-remove",
            {"term": "nude"},
            "That term is not on this server's list (the built-in list can't be changed).",
        ),
    ]
    for path, options, expected in cases:
        assert await say(world, mod, path, **options) == expected, (path, options)
    assert await bot.services.db.fetch_value("SELECT count(*) FROM guild_settings") == 0
    assert await bot.services.db.fetch_value("SELECT count(*) FROM banned_terms") == 0
    assert await bot.services.db.fetch_value("SELECT count(*) FROM audit_log") == 0

    # Allowing variants without the current default moves the default onto an allowed one.
    assert await say(world, mod, "settings variants", allowed="max, flex") == (
        "Allowed variants: max, flex (was all); Default variant: max (was the bot's default, pro)."
    )
    assert await say(world, mod, "settings terms-list") == (
        "This server has added no banned terms.\n"
        f"A built-in list of {len(DEFAULT_TERMS)} terms (explicit content, "
        "and anything sexualising minors) also applies on every server and can't be changed. "
        "Terms match disguised spellings too: look-alike letters, accents, leetspeak, spacing "
        "and invisible characters."
    )


async def test_a_long_term_list_arrives_as_a_file(world: World) -> None:
    bot = await world.start_bot()
    mod = add_moderator(world)
    for n in range(100):  # straight to the core: 60 commands would say nothing new
        await bot.services.moderation.add_term(
            world.guild.id, mod.id, f"forbidden-word-{n:02}", is_regex=False
        )
    it = await world.discord.invoke_slash(mod, world.channel, "settings terms-list")
    data = await answer(it)
    assert data["content"].startswith("This server has 100 banned terms: see the file.")
    message = await it.wait_original(lambda m: bool(m.attachments))
    assert message.ephemeral
    [listing] = message.attachments
    assert listing.filename == "banned-terms.txt"
    assert listing.data.decode().splitlines()[0] == "forbidden-word-00\tterm"


# --------------------------------------------------------------------------- permissions
SETTINGS_COMMANDS: list[tuple[str, dict[str, Any]]] = [
    ("settings show", {}),
    ("settings channel-add", {"channel": "art"}),
    ("settings channel-remove", {"channel": "art"}),
    ("settings channel-all", {}),
    ("settings variants", {"allowed": "pro"}),
    ("settings limits", {"max_megapixels": 1.0, "safety_cap": 1}),
    ("settings dms", {"allowed": True}),
    ("settings uploads", {"allow_outside_age_restricted": False}),
    ("settings audit-channel", {"channel": "art"}),
    ("settings showcase", {"channel": "art"}),
    ("settings approval", {"enabled": True, "channel": "art", "trusted_role": "role"}),
    ("settings trusted-remove", {"role": "role"}),
    ("settings strikes", {"warn": 2}),
    ("settings private-results", {"private": True, "channel": "art"}),
    ("settings outpaint", {"mode": "fast"}),
    ("settings terms-add", {"term": "dragon"}),
    ("settings terms-remove", {"term": "dragon"}),
    ("settings terms-list", {}),
    ("settings lora-add", {"name": "Ink", "finetune_id": "ink", "base": "klein-4b"}),
    ("settings lora-remove", {"name": "Ink"}),
    ("settings loras", {}),
    ("mod strikes", {"user": "alice"}),
    ("mod block", {"user": "alice", "hours": 1.0, "reason": "spam"}),
    ("mod unblock", {"user": "alice"}),
    ("mod why", {"user": "alice"}),
]


async def test_members_without_manage_server_can_neither_see_nor_run_them(world: World) -> None:
    bot = await world.start_bot()
    role = world.discord.add_role(world.guild.id, "Artists")
    named = {"art": world.channel, "alice": world.alice, "role": role}
    for name in ("settings", "mod"):
        command = world.discord.command(name, guild_id=world.guild.id)
        assert command["default_member_permissions"] == str(MANAGE_GUILD)
        assert command["dm_permission"] is False  # servers only
    groups = [world.discord.command(n, guild_id=world.guild.id) for n in ("settings", "mod")]
    registered = {f"{group['name']} {sub['name']}" for group in groups for sub in group["options"]}
    assert registered == {path for path, _ in SETTINGS_COMMANDS}, "every subcommand is tried"

    for path, options in SETTINGS_COMMANDS:
        values = {k: named.get(v, v) if isinstance(v, str) else v for k, v in options.items()}
        with pytest.raises(PermissionError):  # hidden by default
            await world.discord.invoke_slash(world.bob, world.channel, path, values)
        # A server admin unhid it for everyone: the bot still refuses.
        it = await world.discord.invoke_slash(
            world.bob, world.channel, path, values, ignore_default_permissions=True
        )
        assert (await answer(it))["content"] == MISSING_PERMISSION, path
        assert not (await answer(it)).get("embeds"), path
    for table in (
        "guild_settings",
        "audit_log",
        "banned_terms",
        "blocks",
        "strikes",
        "server_loras",
    ):
        assert await bot.services.db.fetch_value(f"SELECT count(*) FROM {table}") == 0, table
    await imagine(world, world.alice, world.channel, prompt="still fine")  # not blocked


# --------------------------------------------------------------------------- members
async def test_channels_enabled_by_moderators_and_threads_follow_their_channel(
    world: World,
) -> None:
    bot = await world.start_bot()
    mod = add_moderator(world)
    studio = world.discord.add_text_channel(world.guild.id, "studio")
    await say(world, mod, "settings channel-add", channel=studio)

    text = await refused(world, bot, world.alice, world.channel, prompt="a lighthouse")
    assert text == f"Images can't be made in this channel. Try <#{studio.id}>."
    off_thread = world.discord.add_thread(world.channel, "chat", owner_id=world.alice.id)
    text = await refused(world, bot, world.alice, off_thread, prompt="a lighthouse")
    assert text == f"Images can't be made in this channel. Try <#{studio.id}>."

    await imagine(world, world.alice, studio, prompt="a lighthouse")
    await imagine(world, world.alice, world.discord.add_thread(studio, "ideas"), prompt="a barn")

    await say(world, mod, "settings channel-all")
    await imagine(world, world.alice, world.channel, prompt="a lighthouse")


async def test_variants_defaults_and_limits_apply_to_imagine(world: World) -> None:
    bot = await world.start_bot()
    mod = add_moderator(world)
    # pro (the bot's default) is not allowed: the first allowed variant becomes the default.
    await say(world, mod, "settings variants", allowed="flex, max")
    text = await refused(world, bot, world.alice, world.channel, prompt="a fox", variant="pro")
    assert text == "FLUX.2 [pro] isn't enabled on this server. Allowed here: flex, max."

    # Without a choice, /imagine uses the server's default.
    assert (await imagine(world, world.alice, world.channel, prompt="a fox")).endpoint == (
        "flux-2-max"
    )
    await say(world, mod, "settings variants", default="flex")
    assert (await imagine(world, world.alice, world.channel, prompt="a fox")).endpoint == (
        "flux-2-flex"
    )

    await say(world, mod, "settings limits", max_megapixels=1.0)
    text = await refused(world, bot, world.alice, world.channel, prompt="big", size="square_2mp")
    assert text == (
        "1440×1440 is 1.98 megapixels; this server allows at most 1. Choose a smaller size."
    )
    submission = await imagine(world, world.alice, world.channel, prompt="ok", size="square_1mp")
    assert (submission.body["width"], submission.body["height"]) == (1024, 1024)
    await say(world, mod, "settings limits", max_megapixels=0.0)
    await imagine(world, world.alice, world.channel, prompt="big again", size="square_2mp")


async def test_the_safety_cap_lowers_what_is_sent_never_raises_it(world: World) -> None:
    await world.start_bot()
    mod = add_moderator(world)
    await say(world, mod, "settings limits", safety_cap=1)
    # /imagine asks for the default tolerance (2): the cap sends 1.
    assert (await imagine(world, world.alice, world.channel, prompt="a")).body[
        "safety_tolerance"
    ] == 1
    await say(world, mod, "settings limits", safety_cap=3)
    sent = [
        (
            await imagine(
                world, world.alice, world.channel, "flux pro", prompt="b", safety_tolerance=asked
            )
        ).body["safety_tolerance"]
        for asked in (5, 0)
    ]
    assert sent == [3, 0]  # min(requested, cap)
    await say(world, mod, "settings limits", safety_cap=-1)
    assert (
        await imagine(world, world.alice, world.channel, "flux pro", prompt="c", safety_tolerance=5)
    ).body["safety_tolerance"] == 5


async def test_uploaded_images_only_in_age_restricted_channels_when_the_server_says_so(
    world: World,
) -> None:
    bot = await world.start_bot()
    mod = add_moderator(world)
    after_dark = world.discord.add_text_channel(world.guild.id, "after-dark", nsfw=True)
    await imagine(world, world.alice, world.channel, prompt="recolour", image=png_upload())

    await say(world, mod, "settings uploads", allow_outside_age_restricted=False)
    text = await refused(
        world, bot, world.alice, world.channel, prompt="recolour", image=png_upload()
    )
    assert text == (
        "On this server, uploaded images can only be edited in age-restricted channels. "
        "You can still edit images Fluxcord made."
    )
    submission = await imagine(
        world, world.alice, after_dark, prompt="recolour", image=png_upload()
    )
    assert submission.body["input_image"]  # the upload was sent along
    await imagine(world, world.alice, world.channel, prompt="no upload, no problem")


async def test_direct_messages_are_off_until_a_server_allows_them(world: World) -> None:
    """Commands must be global to be offered in DMs (a dev guild's commands never are), so
    this bot syncs globally."""
    other = world.discord.add_guild("Elsewhere")
    dave = world.discord.add_member(other.id, "dave")
    bot = await world.start_bot(dev_guild_id=None)
    assert world.discord.command("imagine")["name"] == "imagine"  # global
    mod = add_moderator(world)
    alice_dm, dave_dm = world.discord.open_dm(world.alice), world.discord.open_dm(dave)

    assert await refused(world, bot, world.alice, alice_dm, prompt="a comet") == DMS_CLOSED_TEXT
    with pytest.raises(PermissionError):  # the Discord client doesn't offer /settings in DMs
        await world.discord.invoke_slash(world.alice, alice_dm, "settings show")

    await say(world, mod, "settings dms", allowed=True)
    submission = await imagine(world, world.alice, alice_dm, prompt="a comet")
    assert submission.body["prompt"] == "a comet"
    job = await bot.services.db.fetch_one("SELECT guild_id, channel_id FROM jobs")
    assert job is not None and (job["guild_id"], job["channel_id"]) == (None, alice_dm.id)
    # Dave's only server never allowed direct messages (Discord is asked if he is in Alice's).
    text = await refused(world, bot, dave, dave_dm, looked_up=True, prompt="a comet")
    assert text == DMS_CLOSED_TEXT
    # The built-in terms apply in DMs too (no server, so no strike).
    assert await refused(world, bot, world.alice, alice_dm, prompt="n.u.d.e") == REFUSED_TEXT
    assert await bot.services.db.fetch_value("SELECT count(*) FROM strikes") == 0


# --------------------------------------------------------------------------- banned terms
CYRILLIC_A, CYRILLIC_E, CYRILLIC_O = "\u0430", "\u0435", "\u043e"
ZWSP, ZWJ = "\u200b", "\u200d"
BYPASSES = [
    # A term this server added ("dragon").
    "a dragon at dawn",
    "a DRAGON at dawn",
    "a d.r.a.g.o.n at dawn",
    "a d r a g o n",
    f"a dr{CYRILLIC_A}g{CYRILLIC_O}n",
    "ａ ｄｒａｇｏｎ",
    "a dr4g0n",
    f"a dra{ZWSP}gon",
    "dragons everywhere",
    # A built-in term ("nude").
    "n.u.d.e",
    f"a nud{CYRILLIC_E} statue",
    "ｎｕｄｅ",
    "nud3 figure",
    f"nu{ZWJ}de",
    "n u d e",
]
INNOCENT = [
    "a classic car",
    "a therapist's office",
    "a nudibranch on a reef",
    "a dragonfly over a pond",
]


async def test_banned_terms_and_their_disguises_are_refused_and_look_alikes_pass(
    world: World,
) -> None:
    bot = await world.start_bot()
    mod = add_moderator(world)
    log = world.discord.add_text_channel(world.guild.id, "mod-log")
    await say(world, mod, "settings audit-channel", channel=log)
    await say(world, mod, "settings terms-add", term="dragon")
    # High thresholds: this test is about the terms; escalation has its own test.
    await say(world, mod, "settings strikes", warn=100, temp_block=100, block=100)

    for prompt in BYPASSES:
        text = await refused(world, bot, world.alice, world.channel, prompt=prompt)
        assert text == REFUSED_TEXT, prompt
    assert await bot.services.db.fetch_value("SELECT count(*) FROM strikes") == len(BYPASSES)

    for prompt in INNOCENT:
        assert (await imagine(world, world.alice, world.channel, prompt=prompt)).body[
            "prompt"
        ] == prompt

    # Moderators see what was refused in the audit channel; the member never sees the term.
    refusals = await audit_posted(world, log, len(BYPASSES), containing="prompt refused")
    assert len(refusals) == len(BYPASSES)
    assert refusals[0] == (
        f"**prompt refused** · <@{world.alice.id}> · hit banned term `dragon` in: "
        "`a dragon at dawn`"
    )
    assert "`nude (built-in)`" in refusals[len(BYPASSES) - 6]


async def test_strikes_escalate_to_blocks_that_moderators_can_lift(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    bot = await world.start_bot()
    mod = add_moderator(world)
    log = world.discord.add_text_channel(world.guild.id, "mod-log")
    await say(world, mod, "settings audit-channel", channel=log)
    await say(world, mod, "settings strikes", warn=1, temp_block=2, block=3, temp_block_hours=1.0)
    alice = f"<@{world.alice.id}>"

    text = await refused(world, bot, world.alice, world.channel, prompt="nude")
    assert text == f"{REFUSED_TEXT} {WARNING_TEXT}"
    text = await refused(world, bot, world.alice, world.channel, prompt="hentai")
    assert text.startswith(f"{REFUSED_TEXT} {BLOCKED_UNTIL}")
    until = int(text.split("<t:")[1].split(":")[0])
    assert abs(until - (time.time() + 3600)) < 60
    # Now even an innocent request is refused, saying until when.
    text = await refused(world, bot, world.alice, world.channel, prompt="a kitten")
    assert text == f"{BLOCKED_UNTIL}{until}:f>."
    await imagine(world, world.bob, world.channel, prompt="bob is fine")

    # Two hours later the temporary block is over; the next strike blocks for good.
    later = time.time() + 7200
    monkeypatch.setattr(bot.services.moderation, "_clock", lambda: later)
    text = await refused(world, bot, world.alice, world.channel, prompt="porn")
    assert text == f"{REFUSED_TEXT} {BLOCKED}"
    assert await refused(world, bot, world.alice, world.channel, prompt="a kitten") == BLOCKED

    strikes = await say(world, mod, "mod strikes", user=world.alice)
    lines = strikes.splitlines()
    assert lines[0] == (
        f"**Strikes of {alice}**: 3 active (warning at 1, temporary block at 2, block at 3)"
    )
    assert lines[1].startswith(f"{alice} is blocked until a moderator unblocks them, by Fluxcord")
    assert lines[1].endswith(": 3 refused prompts")
    assert [line.split(" · ", 1)[1] for line in lines[3:]] == [
        "`porn (built-in)` · `porn`",
        "`hentai (built-in)` · `hentai`",
        "`nude (built-in)` · `nude`",
    ]
    why = await say(world, mod, "mod why", user=world.alice)
    assert "**Latest audit entries about them**" in why
    assert "**blocked** · Fluxcord · " in why and "**prompt refused** · " in why

    await audit_posted(world, log, 3, containing="**prompt refused**")
    await audit_posted(world, log, 2, containing="**blocked**")
    posted = [m.content for m in audit_messages(world, log)]
    assert sum("**prompt refused**" in p for p in posted) == 3
    assert [p for p in posted if p.startswith("**blocked**")] == [
        f"**blocked** · Fluxcord · {alice} until <t:{until}:f>: 2 refused prompts",
        f"**blocked** · Fluxcord · {alice} until unblocked: 3 refused prompts",
    ]

    assert await say(world, mod, "mod unblock", user=world.alice) == (
        f"Unblocked {alice} and cleared their strikes: they start from zero."
    )
    [unblocked] = await audit_posted(world, log, 1, containing="**unblocked**")
    assert unblocked == f"**unblocked** · <@{mod.id}> · {alice}; strikes cleared"
    await imagine(world, world.alice, world.channel, prompt="a kitten")
    assert (await say(world, mod, "mod strikes", user=world.alice)).startswith(
        f"**Strikes of {alice}**: 0 active"
    )
    assert await say(world, mod, "mod unblock", user=world.alice) == (
        f"{alice} wasn't blocked and has no strikes: nothing to do."
    )


async def test_moderators_block_and_unblock_members_but_not_themselves_or_the_bot(
    world: World,
) -> None:
    bot = await world.start_bot()
    mod = add_moderator(world)
    bob = f"<@{world.bob.id}>"
    assert await say(world, mod, "mod block", user=mod) == "You can't block yourself."
    assert await say(world, mod, "mod block", user=world.discord.application_id) == (
        "I can't block myself: I'm the one making the images."
    )
    assert await bot.services.db.fetch_value("SELECT count(*) FROM blocks") == 0

    text = await say(world, mod, "mod block", user=world.bob, hours=2.0, reason="spamming")
    assert text.startswith(f"Blocked {bob} until <t:") and text.endswith(":R>): spamming.")
    assert (await refused(world, bot, world.bob, world.channel, prompt="hi")).startswith(
        BLOCKED_UNTIL
    )
    assert await say(world, mod, "mod block", user=world.bob) == (
        f"Blocked {bob} until a moderator unblocks them: no reason given."
    )
    assert await refused(world, bot, world.bob, world.channel, prompt="hi") == BLOCKED
    why = await say(world, mod, "mod why", user=world.bob)
    assert why.splitlines()[:3] == [
        f"**About {bob}**",
        why.splitlines()[1],
        "Active strikes: 0.",
    ]
    assert why.splitlines()[1].startswith(
        f"{bob} is blocked until a moderator unblocks them, by <@{mod.id}> <t:"
    )
    assert f"**blocked** · <@{mod.id}> · {bob} until unblocked: no reason given" in why
    await say(world, mod, "mod unblock", user=world.bob)
    await imagine(world, world.bob, world.channel, prompt="hi")
    rows = await bot.services.db.fetch_all(
        "SELECT actor_id, action, target_id FROM audit_log "
        "WHERE action IN ('blocked', 'unblocked') ORDER BY id"
    )
    assert [tuple(r) for r in rows] == [
        (mod.id, "blocked", world.bob.id),
        (mod.id, "blocked", world.bob.id),
        (mod.id, "unblocked", world.bob.id),
    ]
