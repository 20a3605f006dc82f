"""The owner's rules without Discord: who counts as an owner (and how long that answer is
kept), the servers ranked by spend, one setting changed by the start-up rules, and the
/help text within Discord's limits."""

from __future__ import annotations

import pytest

from bot.catalogue import CATALOGUE, available_variants
from bot.errors import SettingsError
from bot.ledger.reports import Total
from bot.operator import NotOwner, Owners, owner_ids, servers_by_spend
from bot.operator.owners import OWNERS_FRESH_SECONDS
from bot.settings import Settings, with_setting
from cogs.about import cost_line, help_embed, packed_fields


def test_an_application_has_its_owner_or_its_teams_admins_and_developers() -> None:
    assert owner_ids(10, None, []) == {10}
    members = [(1, "admin", True), (2, "developer", True), (3, "read_only", True)]
    members += [(4, "admin", False)]  # invited, not accepted
    assert owner_ids(10, 99, members) == {99, 1, 2}


async def test_owners_are_read_once_then_again_when_stale_and_kept_if_discord_fails() -> None:
    now = [0.0]
    answers: list[frozenset[int] | Exception] = [frozenset({1}), RuntimeError("down")]
    asked = 0

    async def lookup() -> frozenset[int]:
        nonlocal asked
        asked += 1
        answer = answers[min(asked, len(answers)) - 1]
        if isinstance(answer, Exception):
            raise answer
        return answer

    owners = Owners(lookup, clock=lambda: now[0])
    await owners.check(1)
    with pytest.raises(NotOwner, match="Only the bot's owner"):
        await owners.check(2)
    assert asked == 1  # cached
    now[0] = OWNERS_FRESH_SECONDS
    await owners.check(1)  # Discord failed: the last answer stands
    assert asked == 2


def test_servers_are_ranked_by_this_months_spend_and_idle_ones_listed_last() -> None:
    spend = {2: Total(2, 1, 3000), 3: Total(3, 4, 5600)}
    ranked = servers_by_spend([(1, "b-idle"), (2, "two"), (3, "three"), (4, "A-idle")], spend)
    assert [(s.guild_id, s.credits_mc, s.images) for s in ranked] == [
        (3, 5600, 4),
        (2, 3000, 1),
        (4, 0, 0),
        (1, 0, 0),
    ]


def settings(**values: object) -> Settings:
    return Settings(discord_token="token", bfl_api_key="key", **values)  # type: ignore[arg-type]


def test_one_setting_is_changed_by_the_same_rules_as_at_start_up() -> None:
    base = settings(default_user_daily_images=5)
    changed = with_setting(base, "default_user_daily_images", "unlimited")
    assert changed.default_user_daily_images is None
    assert base.default_user_daily_images == 5  # the original never changes
    with pytest.raises(SettingsError, match=r"^DEFAULT_USER_MONTHLY_CREDITS .*must be a number"):
        with_setting(base, "default_user_monthly_credits", "lots")
    with pytest.raises(SettingsError, match=r"^DEFAULT_GUILD_DAILY_IMAGES Input should be greater"):
        with_setting(base, "default_guild_daily_images", "-3")
    # A check across settings: a model this installation doesn't offer (no AI/ML API key).
    with pytest.raises(SettingsError, match="DEFAULT_VARIANT=dev needs AIML_API_KEY"):
        with_setting(base, "default_variant", "dev")
    assert base.default_variant == "pro"


def test_help_fits_discords_limits_with_every_model_offered() -> None:
    every = available_variants(include_preview=True, providers=["bfl", "aiml"])
    embed = help_embed(
        bot_name="Fluxcord",
        variants=every,
        default_key="pro",
        prompt_retention_days=90,
        reference_retention_days=30,
        docs_url="https://example.org/docs",
    )
    assert len(embed) <= 6000
    assert all(len(field.value or "") <= 1024 for field in embed.fields)
    lines = "\n".join(f.value or "" for f in embed.fields if f.name and "Costs" in f.name)
    assert all(f"**{key}** " in lines for key in every)


def test_long_lists_are_split_into_fields_never_cut() -> None:
    lines = [f"line {n} " + "x" * 90 for n in range(30)]
    fields = packed_fields("Models", lines)
    assert [title for title, _ in fields][:2] == ["Models", "Models (continued)"]
    assert all(len(value) <= 1024 for _, value in fields)
    assert "\n".join(value for _, value in fields).splitlines() == lines


def test_a_models_cost_line_says_what_one_image_costs() -> None:
    assert cost_line("pro", CATALOGUE["pro"], default=True) == (
        "**pro** FLUX.2 [pro]: 3 credits, +1.5 per extra or reference MP (default)"
    )
