"""The apply step of /prefer: a member's defaults fill what a request leaves out, a command's
own options win, and where the server forbids a default the server wins with a note."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any, cast

import pytest

from bot.catalogue import CATALOGUE
from bot.community.policy import CommunityPolicy, Requester
from bot.drafts import Draft
from bot.errors import InvalidRequest
from bot.generation import GenerationService
from bot.members.preferences import MemberPreferences, SuffixTooLong, with_suffix
from bot.references import ReferenceCandidate, ReferenceLimits
from bot.servers.audit import AuditLog
from bot.servers.settings import SettingsStore
from bot.storage.db import open_database
from bot.variants import JobParams

GUILD, MOD, ALICE = 10, 20, 30
HERE = Requester(ALICE, GUILD, channel_id=1)
KEYS = ("pro", "flex", "klein-4b", "dev")


class World:
    def __init__(self, generation: GenerationService, settings: SettingsStore) -> None:
        self.generation = generation
        self.settings = settings

    def validate(self, draft: Draft, **preferences: Any) -> tuple[str, JobParams]:
        wanted = MemberPreferences(ALICE, **preferences)
        variant, params = self.generation.validate(draft, HERE, wanted)
        return self.generation.offered_name(variant), params


@pytest.fixture
async def world() -> AsyncIterator[World]:
    db = await open_database(":memory:")
    audit = AuditLog(db, audit_channel=lambda guild: None)
    settings = SettingsStore(db, audit, known_variants=lambda: KEYS)
    policy = CommunityPolicy(
        settings, cast(Any, None), direct_messages=cast(Any, None)
    )  # validate reads the server's settings only
    generation = GenerationService(
        cast(Any, None),  # no engine: validate sends nothing
        {key: CATALOGUE[key] for key in KEYS},
        default_variant="pro",
        limits=ReferenceLimits(),
        policy=policy,
    )
    yield World(generation, settings)
    await db.close()


def reference() -> ReferenceCandidate:
    async def fetch() -> bytes:
        raise AssertionError("validate downloads nothing")

    return ReferenceCandidate("a.png", "image/png", 1000, fetch, width=800, height=600)


async def test_without_defaults_a_request_is_validated_as_before(world: World) -> None:
    name, params = world.validate(Draft(prompt="a fox", seed=7))
    assert name == "pro"
    assert (params.prompt, params.width, params.height) == ("a fox", None, None)
    assert params.options["prompt_upsampling"] is True  # the model's own default
    assert params.notes == () and not params.suffix_applied


async def test_defaults_fill_every_option_the_command_left_out(world: World) -> None:
    name, params = world.validate(
        Draft(prompt="a red fox"),
        variant="flex",
        size="landscape_16_9",
        prompt_suffix="cinematic lighting",
        prompt_upsampling=False,
    )
    assert name == "flex"
    assert (params.width, params.height) == (1360, 768)
    assert params.prompt == "a red fox, cinematic lighting"
    assert params.options["prompt_upsampling"] is False
    assert params.suffix_applied and params.notes == ()


async def test_the_commands_own_options_win_over_the_defaults(world: World) -> None:
    draft = Draft(
        prompt="a red fox.",
        variant="pro",
        width=512,
        height=512,
        options={"prompt_upsampling": True},
    )
    name, params = world.validate(
        draft, variant="flex", size="1024x768", prompt_suffix="oil paint", prompt_upsampling=False
    )
    assert name == "pro"
    assert (params.width, params.height) == (512, 512)
    assert params.options["prompt_upsampling"] is True
    assert params.prompt == "a red fox. oil paint"  # the suffix is not an option: it is added


async def test_a_default_model_the_server_does_not_allow_gives_way_with_a_note(
    world: World,
) -> None:
    await world.settings.update(
        GUILD, MOD, "allowed", allowed_variants=frozenset({"klein-4b"}), default_variant="klein-4b"
    )
    name, params = world.validate(Draft(prompt="a fox"), variant="pro", prompt_upsampling=True)
    assert name == "klein-4b"
    assert params.notes == ("Your default model pro isn't offered here, so this used klein-4b.",)
    assert "prompt_upsampling" not in params.options  # klein has no such option: not sent


async def test_a_model_the_member_names_is_still_refused_where_the_server_forbids_it(
    world: World,
) -> None:
    await world.settings.update(GUILD, MOD, "allowed", allowed_variants=frozenset({"pro"}))
    with pytest.raises(InvalidRequest, match="isn't enabled on this server"):
        world.validate(Draft(prompt="a fox", variant="flex"), variant="pro")


async def test_a_default_size_over_the_servers_cap_gives_way_with_a_note(world: World) -> None:
    await world.settings.update(GUILD, MOD, "cap", max_megapixels=1.0)
    _, params = world.validate(Draft(prompt="a fox"), size="wide_2mp")
    assert (params.width, params.height) == (None, None)
    assert params.notes == (
        "Your default size wide_2mp (1920×1088) is over this server's 1 MP limit, so this used "
        "the standard size.",
    )


async def test_a_default_size_the_model_cannot_make_gives_way_with_a_note(world: World) -> None:
    name, params = world.validate(Draft(prompt="a fox", variant="dev"), size="1040x1040")
    assert name == "dev" and params.width is None
    assert params.notes == (
        "Your default size 1040×1040 isn't possible with FLUX.2 [dev], so this used its "
        "standard size.",
    )


async def test_an_edit_with_references_keeps_their_size(world: World) -> None:
    draft = Draft(prompt="make it blue", references=[reference()], needs_edit=True)
    _, params = world.validate(draft, size="square_2mp")
    assert (params.width, params.height) == (None, None) and params.notes == ()
    sized = replace(draft, size_preset="portrait_3_4")
    _, params = world.validate(sized, size="square_2mp")
    assert (params.width, params.height) == (864, 1152)  # what the member gave


async def test_a_default_model_that_cannot_edit_gives_way_on_an_edit(world: World) -> None:
    world.generation.variants["flex"] = replace(CATALOGUE["flex"], max_references=0)
    draft = Draft(prompt="make it blue", references=[reference()], needs_edit=True)
    name, params = world.validate(draft, variant="flex")
    assert name == "pro"
    assert params.notes == ("Your default model flex can't edit images, so this used pro.",)


async def test_a_suffix_that_makes_the_prompt_too_long_is_refused_by_name(world: World) -> None:
    limit = CATALOGUE["pro"].max_prompt_chars
    with pytest.raises(SuffixTooLong) as raised:
        world.validate(Draft(prompt="x" * (limit - 3)), prompt_suffix="four")
    assert str(raised.value) == (
        f"With your default prompt suffix (4 characters) the prompt is {limit + 3} characters; "
        f"FLUX.2 [pro] accepts at most {limit}. Shorten the prompt, or change the suffix with "
        "/prefer."
    )
    with pytest.raises(InvalidRequest, match=r"^The prompt is"):  # too long on its own
        world.validate(Draft(prompt="x" * (limit + 1)), prompt_suffix="four")


async def test_the_suffix_is_added_once_and_never_to_a_rerolled_prompt(world: World) -> None:
    _, params = world.validate(Draft(prompt="a fox, Oil Paint"), prompt_suffix="oil paint")
    assert params.prompt == "a fox, Oil Paint" and params.suffix_applied
    reroll = Draft(prompt="a fox, oil paint", variant="pro", use_preferences=False)
    _, params = world.validate(reroll, prompt_suffix="oil paint", variant="flex", size="wide_2mp")
    assert params.prompt == "a fox, oil paint" and params.width is None
    assert not params.suffix_applied  # only the request that added it is marked


async def test_a_blank_prompt_is_still_missing_with_a_suffix(world: World) -> None:
    with pytest.raises(InvalidRequest, match="Please give a prompt"):
        world.validate(Draft(prompt="   "), prompt_suffix="oil paint")


def test_with_suffix_joins_with_a_comma_unless_the_prompt_ends_a_sentence() -> None:
    assert with_suffix(" a fox ", "at dusk") == "a fox, at dusk"
    assert with_suffix("a fox!", "at dusk") == "a fox! at dusk"
    assert with_suffix("a fox at dusk", "At Dusk") == "a fox at dusk"


def test_notes_and_the_suffix_mark_survive_the_jobs_json_and_old_rows_read_as_before() -> None:
    params = JobParams("a fox, oil", None, None, 1, {}, notes=("one",), suffix_applied=True)
    assert JobParams.from_json(params.to_json()) == params
    old = {"prompt": "a fox", "width": None, "height": None, "seed": 1, "options": {}}
    assert JobParams.from_json(old) == JobParams("a fox", None, None, 1, {})
    assert JobParams.from_json(old).to_json() == old  # nothing new written for most jobs
