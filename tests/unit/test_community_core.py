"""The pieces behind /settings and /mod that need no Discord: how settings read, parsing and
suggestions, the audit log's per-member filter, and moderators' pattern mistakes."""

from __future__ import annotations

import logging
from types import SimpleNamespace
from typing import Any, cast

import pytest

from bot.errors import InvalidRequest
from bot.generation import GenerationService
from bot.moderation import strikes
from bot.moderation.strikes import Moderation, PromptRefused
from bot.moderation.terms import BannedTerm
from bot.references import ReferenceLimits
from bot.servers.audit import AuditLog
from bot.servers.settings import ServerSettings, SettingsStore
from bot.storage.db import open_database
from cogs.moderation import fit, term_choices
from cogs.settings import ServerSettingsCommands
from cogs.settings_text import BOT_DEFAULT, SettingsText, parse_variants, variant_list_choices

KEYS = ("pro", "max", "flex", "klein-4b", "klein-9b")
TEXT = SettingsText(KEYS, "pro")
GUILD, MOD, ALICE, BOB = 10, 20, 30, 40


def values(choices: list[Any]) -> list[str]:
    return [choice.value for choice in choices]


# --------------------------------------------------------------------------- text
def test_changes_read_as_new_value_then_old_in_catalogue_order() -> None:
    before = ServerSettings(GUILD)
    after = ServerSettings(
        GUILD, allowed_variants=frozenset({"flex", "pro"}), safety_cap=2, allow_dms=True
    )
    assert TEXT.changes(before, after) == [
        "Allowed variants: pro, flex (was all)",
        "Safety cap: at most 2 (was no cap)",
        "Direct messages: allowed for members (was not allowed)",
    ]
    assert TEXT.changes(after, after) == []


def test_every_setting_has_a_readable_value() -> None:
    settings = ServerSettings(
        GUILD, enabled_channels=frozenset({2, 1}), trusted_roles=frozenset({5})
    )
    shown = dict(TEXT.show(settings, server_terms=1))
    assert shown["Where"] == "Enabled channels: <#1>, <#2> (threads follow their channel)"
    assert "Trusted roles: <@&5>" in shown["Approval queue"]
    assert "Default variant: the bot's default, pro" in shown["Models"]
    assert "Temporary block length: 24 h" in shown["Strikes"]


def test_fit_drops_whole_lines_to_stay_within_a_message() -> None:
    lines = [f"line {n:03} " + "x" * 90 for n in range(40)]
    text = fit(lines)
    assert len(text) <= 2000 and text.endswith("\n…")
    assert all(line in lines or line == "…" for line in text.splitlines())


# --------------------------------------------------------------------------- parsing
@pytest.mark.parametrize(
    ("typed", "expected"),
    [
        ("pro, flex", {"pro", "flex"}),
        ("PRO flex;max", {"pro", "flex", "max"}),
        ("all", None),
        (" All ", None),
    ],
)
def test_allowed_variants_are_a_list_or_all(typed: str, expected: set[str] | None) -> None:
    assert parse_variants(typed, KEYS) == expected


@pytest.mark.parametrize(
    ("typed", "message"),
    [
        (" , ", "List at least one variant, or write all."),
        (
            "pro, turbo, zoom",
            "There is no variant called turbo, zoom. Choose from: pro, max, "
            "flex, klein-4b, klein-9b.",
        ),
    ],
)
def test_bad_variant_lists_are_explained(typed: str, message: str) -> None:
    with pytest.raises(InvalidRequest) as refused:
        parse_variants(typed, KEYS)
    assert str(refused.value) == message


def test_variant_list_suggestions_complete_the_last_name() -> None:
    assert values(variant_list_choices("", KEYS)) == ["all", *KEYS]
    assert values(variant_list_choices("pro, f", KEYS)) == ["pro, flex"]
    assert values(variant_list_choices("pro, flex, k", KEYS)) == [
        "pro, flex, klein-4b",
        "pro, flex, klein-9b",
    ]
    assert values(variant_list_choices("pro,", KEYS)) == [f"pro, {k}" for k in KEYS[1:]]


def test_term_suggestions_filter_and_skip_what_cannot_be_a_value() -> None:
    terms = [
        BannedTerm("dragon", False, "server"),
        BannedTerm(r"\bwyrms?\b", True, "server"),
        BannedTerm("d" + "x" * 120, False, "server"),
        *(BannedTerm(f"word{n}", False, "server") for n in range(30)),
    ]
    assert [(c.name, c.value) for c in term_choices(terms, "WYRM")] == [
        (r"\bwyrms?\b (regex)", r"\bwyrms?\b")
    ]
    assert values(term_choices(terms, "d")) == ["dragon", *[f"word{n}" for n in range(24)]]


# --------------------------------------------------------------------------- autocomplete
def interaction(*, moderator: bool) -> Any:
    permissions = SimpleNamespace(manage_guild=moderator, administrator=False)
    return SimpleNamespace(guild_id=GUILD, permissions=permissions)


def cog(terms: list[BannedTerm]) -> ServerSettingsCommands:
    from bot.catalogue import CATALOGUE

    generation = GenerationService(
        cast(Any, None),  # no engine: only the variant choice is asked for
        {key: CATALOGUE[key] for key in KEYS},
        default_variant="pro",
        limits=ReferenceLimits(),
    )
    services = SimpleNamespace(
        moderation=SimpleNamespace(server_terms=lambda guild_id: terms), generation=generation
    )
    bot = SimpleNamespace(services=services)
    return ServerSettingsCommands(cast(Any, bot))


async def test_only_moderators_get_suggestions_terms_above_all() -> None:
    community = cog([BannedTerm("dragon", False, "server")])
    member, mod = interaction(moderator=False), interaction(moderator=True)
    assert await community._term_autocomplete(member, "") == []
    assert values(await community._term_autocomplete(mod, "")) == ["dragon"]
    assert await community._allowed_autocomplete(member, "") == []
    assert await community._default_autocomplete(member, "") == []
    suggested = await community._default_autocomplete(mod, "fl")
    assert [(c.name, c.value) for c in suggested] == [
        ("FLUX.2 [flex] (flex)", "flex"),
        ("The bot's default (pro)", BOT_DEFAULT),
    ]


def test_the_bot_default_is_the_one_the_generation_service_picks() -> None:
    settings = cog([])
    assert settings.bot_default() == "pro"
    generation = settings.bot.services.generation
    generation.default_variant = "dev"  # configured, but not offered here
    assert settings.bot_default() == "pro" == generation.pick_variant(None).key
    generation.variants = {}  # nothing offered at all: the configured name is shown
    assert settings.bot_default() == "dev"


def test_a_server_without_its_own_default_uses_the_bots() -> None:
    assert ServerSettings(GUILD).effective_default("pro") == "pro"
    assert ServerSettings(GUILD, default_variant="flex").effective_default("pro") == "flex"


def test_every_moderator_command_checks_manage_server_when_it_runs() -> None:
    from cogs.checks import server_managers_only
    from cogs.moderation import ModerationCommands

    # The predicate `server_managers_only` adds to whatever it decorates.
    marker = server_managers_only(lambda: None).__discord_app_commands_checks__[0]
    groups = [ServerSettingsCommands.settings, ModerationCommands.mod]
    commands = [command for group in groups for command in group.commands]
    assert len(commands) == 25  # 21 under /settings, 4 under /mod
    assert all(command.checks == [marker] for command in commands)
    assert all(group.guild_only and group.default_permissions.manage_guild for group in groups)


async def test_allowing_variants_without_the_default_makes_the_first_allowed_one_default() -> None:
    db = await open_database(":memory:")
    store = SettingsStore(
        db, AuditLog(db, audit_channel=lambda guild: None), known_variants=lambda: KEYS
    )
    server = ServerSettings(GUILD)
    flex_max = {"allowed_variants": frozenset({"flex", "max"})}
    assert store.with_usable_default(server, flex_max, bot_default="pro") == {
        **flex_max,
        "default_variant": "max",  # the bot's order: pro, max, flex, …
    }
    with_pro = {"allowed_variants": frozenset({"flex", "pro"})}
    assert store.with_usable_default(server, with_pro, bot_default="pro") == with_pro
    chosen = {**flex_max, "default_variant": "klein-4b"}
    with pytest.raises(InvalidRequest, match=r"The default \(klein-4b\) must be one of"):
        store.with_usable_default(server, chosen, bot_default="pro")
    await db.close()


@pytest.mark.parametrize(
    ("target", "is_bot", "refusal"),
    [
        (MOD, False, "You can't block yourself."),
        (99, True, "I can't block myself: I'm the one making the images."),
        (BOB, True, "Bots can't make images here, so there's nothing to block."),
    ],
)
def test_moderators_cant_block_themselves_fluxcord_or_bots(
    target: int, is_bot: bool, refusal: str
) -> None:
    with pytest.raises(InvalidRequest) as raised:
        strikes.check_may_block(MOD, target, target_is_bot=is_bot, bot_user_id=99)
    assert str(raised.value) == refusal
    strikes.check_may_block(MOD, ALICE, target_is_bot=False, bot_user_id=99)
    strikes.check_may_block(MOD, ALICE, target_is_bot=False, bot_user_id=None)


# --------------------------------------------------------------------------- core
@pytest.fixture
async def core() -> Any:
    db = await open_database(":memory:")
    audit = AuditLog(db, audit_channel=lambda guild: None)
    settings = SettingsStore(db, audit, known_variants=lambda: KEYS)
    yield SimpleNamespace(
        db=db, audit=audit, moderation=Moderation(db, audit, settings=settings.get)
    )
    await db.close()


async def test_recent_audit_entries_can_be_narrowed_to_one_member(core: Any) -> None:
    moderation: Moderation = core.moderation
    await moderation.block(GUILD, MOD, ALICE, hours=None, reason="a")
    await moderation.block(GUILD, MOD, BOB, hours=None, reason="b")
    await moderation.unblock(GUILD, MOD, ALICE)
    await core.audit.record(GUILD + 1, MOD, "blocked", "elsewhere", target_id=ALICE)
    about_alice = await core.audit.recent(GUILD, target_id=ALICE)
    assert [(e.action, e.target_id) for e in about_alice] == [
        ("unblocked", ALICE),
        ("blocked", ALICE),
    ]
    assert len(await core.audit.recent(GUILD)) == 3


@pytest.mark.parametrize(
    ("pattern", "is_regex"),
    [(r"(a+)\1", True), ("(?<!x)y", True), ("[oops", True), ("   ", False), ("!!!", False)],
)
async def test_bad_patterns_reach_moderators_as_friendly_refusals(
    core: Any, pattern: str, is_regex: bool
) -> None:
    with pytest.raises(InvalidRequest):
        await core.moderation.add_term(GUILD, MOD, pattern, is_regex=is_regex)
    assert await core.db.fetch_value("SELECT count(*) FROM banned_terms") == 0
    assert await core.db.fetch_value("SELECT count(*) FROM audit_log") == 0


async def test_a_server_has_at_most_max_server_terms(
    core: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(strikes, "MAX_SERVER_TERMS", 3)
    for n in range(3):
        await core.moderation.add_term(GUILD, MOD, f"word{n}", is_regex=False)
    with pytest.raises(InvalidRequest, match="already has 3 banned terms, the most it can have"):
        await core.moderation.add_term(GUILD, MOD, "one more", is_regex=False)
    assert await core.db.fetch_value("SELECT count(*) FROM banned_terms") == 3
    await core.moderation.add_term(GUILD + 1, MOD, "word0", is_regex=False)  # per server


async def test_a_stored_term_rules_now_refuse_is_skipped_with_a_warning(
    core: Any, caplog: pytest.LogCaptureFixture
) -> None:
    # As if stored by an older version: a backreference RE2 can't run, and a usable term.
    for pattern, is_regex in ((r"(a+)\1b", 1), ("dragon", 0)):
        await core.db.execute(
            "INSERT INTO banned_terms (guild_id, pattern, is_regex, added_by, added_at)"
            " VALUES (?,?,?,?,?)",
            (GUILD, pattern, is_regex, MOD, 0.0),
        )
    with caplog.at_level(logging.WARNING, logger="bot.moderation.strikes"):
        await core.moderation.load()
    assert [r.getMessage() for r in caplog.records] == [
        "Banned term 1 of server 10 is skipped, not matched: That regular expression uses a "
        "backreference, such as \\1 or (?P=name). Banned terms are matched with RE2, an "
        "engine that always finishes quickly whatever the pattern, so backreferences, "
        "lookaround, possessive or atomic groups and \\Z (write \\z) can't be used. Rewrite "
        "it without them. (pattern '(a+)\\\\1b')"
    ]
    assert await core.moderation.first_hit(GUILD, "aab") is None
    with pytest.raises(PromptRefused):
        await core.moderation.check_prompt(GUILD, ALICE, "a dragon")
    # Still listed, so a moderator can take it off the list.
    assert [t.pattern for t in core.moderation.server_terms(GUILD)] == [r"(a+)\1b", "dragon"]
    await core.moderation.remove_term(GUILD, MOD, r"(a+)\1b")


# --------------------------------------------------------------------------- layers
def imported_packages(package: str) -> set[str]:
    """Every `bot.*` module the files of `package` import (type-checking imports included)."""
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    names: set[str] = set()
    for path in (root / package.replace(".", "/")).glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                names.add(node.module)
            elif isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
    return {name for name in names if name.startswith("bot.")}


def test_server_settings_and_the_audit_log_stand_below_moderation_and_community() -> None:
    servers = imported_packages("bot.servers")
    moderation = imported_packages("bot.moderation")
    assert not {n for n in servers if n.startswith(("bot.moderation", "bot.community"))}
    assert not {n for n in moderation if n.startswith("bot.community")}
