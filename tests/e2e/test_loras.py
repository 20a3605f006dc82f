"""The server's LoRA catalogue on klein, end to end: moderators register LoRAs with
/settings, members pick them by autocomplete on /flux klein-*, and the request goes to the
LoRA's `-finetuned` endpoint at the BFL stand-in."""

from __future__ import annotations

from typing import Any

from tests.e2e.conftest import World
from tests.fakes.discord.models import InteractionHandle, Message, User

MANAGE_GUILD = 1 << 5


def add_moderator(world: World) -> User:
    mods = world.discord.add_role(world.guild.id, "Mods", permissions=MANAGE_GUILD)
    return world.discord.add_member(world.guild.id, "mod", roles=[mods.id])


async def private_text(it: InteractionHandle) -> str:
    callback = await it.response()
    assert callback.type == 4, callback
    assert callback.data is not None and callback.data.get("flags", 0) & 64, "must be ephemeral"
    return str(callback.data["content"])


async def lora_add(world: World, mod: User, **options: Any) -> str:
    it = await world.discord.invoke_slash(mod, world.channel, "settings lora-add", options)
    return await private_text(it)


def job_id_of(message: Message) -> str:
    return str(message.embeds[0]["footer"]["text"]).removeprefix("Job ")


def embed_fields(message: Message) -> dict[str, str]:
    return {f["name"]: f["value"] for f in message.embeds[0]["fields"]}


async def test_moderators_add_list_and_remove_loras_with_an_audit_entry_each(
    world: World,
) -> None:
    bot = await world.start_bot()
    mod = add_moderator(world)
    text = await lora_add(
        world,
        mod,
        name="Ink Wash",
        finetune_id="ink-wash_v2",
        base="klein-base-4b",
        strength=0.8,
        trigger="sumi-e style",
    )
    assert text.startswith("Added **Ink Wash** — `ink-wash_v2` on klein base 4B, strength 0.8")
    listing = await private_text(
        await world.discord.invoke_slash(mod, world.channel, "settings loras")
    )
    assert "**Ink Wash** — `ink-wash_v2` on klein base 4B, strength 0.8 · trigger" in listing

    removed = await private_text(
        await world.discord.invoke_slash(
            mod, world.channel, "settings lora-remove", {"name": "ink wash"}
        )
    )
    assert removed.startswith("Removed **Ink Wash**")
    listing = await private_text(
        await world.discord.invoke_slash(mod, world.channel, "settings loras")
    )
    assert listing.startswith("This server has no LoRAs yet.")
    rows = await bot.services.db.fetch_all(
        "SELECT actor_id, action, detail FROM audit_log ORDER BY id"
    )
    assert [(r["actor_id"], r["action"]) for r in rows] == [
        (mod.id, "lora added"),
        (mod.id, "lora removed"),
    ]
    assert rows[0]["detail"] == (
        "“Ink Wash”: ink-wash_v2 on klein-base-4b, strength 0.8, trigger “sumi-e style”"
    )
    assert await bot.services.db.fetch_value("SELECT count(*) FROM server_loras") == 0


async def test_a_bad_finetune_id_or_strength_is_refused_privately_and_nothing_is_stored(
    world: World,
) -> None:
    bot = await world.start_bot()
    mod = add_moderator(world)
    bad_id = await lora_add(world, mod, name="Ink", finetune_id="Ink Wash!", base="klein-4b")
    assert "is not a BFL finetune id" in bad_id
    bad_strength = await lora_add(
        world, mod, name="Ink", finetune_id="ink", base="klein-4b", strength=5.0
    )
    assert bad_strength.startswith("The strength must be between 0.1 and 2")
    assert await bot.services.db.fetch_value("SELECT count(*) FROM server_loras") == 0
    assert await bot.services.db.fetch_value("SELECT count(*) FROM audit_log") == 0
    # The base is offered as choices only: Discord's client can't send another.
    definition = world.discord.command("settings", guild_id=world.guild.id)
    assert definition is not None
    add = next(o for o in definition["options"] if o["name"] == "lora-add")
    base = next(o for o in add["options"] if o["name"] == "base")
    assert [c["value"] for c in base["choices"]] == [
        "klein-4b",
        "klein-9b",
        "klein-9b-kv",
        "klein-9b-kv-bf16",
        "klein-base-4b",
        "klein-base-9b",
    ]
    # Members can't manage the catalogue, even where an admin shows them the command.
    it = await world.discord.invoke_slash(
        world.alice,
        world.channel,
        "settings lora-add",
        {"name": "x", "finetune_id": "x", "base": "klein-4b"},
        ignore_default_permissions=True,
    )
    assert "Manage Server" in await world.refusal(it)
    assert await bot.services.db.fetch_value("SELECT count(*) FROM server_loras") == 0


async def test_autocomplete_lists_this_servers_loras_for_that_model_only(world: World) -> None:
    bot = await world.start_bot()
    mod = add_moderator(world)
    await lora_add(world, mod, name="Ink Wash", finetune_id="ink", base="klein-4b")
    await lora_add(world, mod, name="Inkblot", finetune_id="blot", base="klein-base-4b")
    await lora_add(world, mod, name="Ink Nine", finetune_id="nine", base="klein-base-9b")
    # Another server's LoRA, with a name that matches too.
    other = world.discord.add_guild("Other")
    await bot.services.loras.add(
        other.id, 1, name="Ink Elsewhere", finetune_id="elsewhere", base="klein-4b"
    )

    async def suggestions(command: str, typed: str) -> list[str]:
        it = await world.discord.invoke_autocomplete(
            world.alice, world.channel, command, {"lora": typed}, focused="lora"
        )
        assert (await it.response()).type == 8
        return [str(choice["value"]) for choice in it.choices or []]

    assert await suggestions("flux klein-4b", "ink") == ["Ink Wash", "Inkblot"]
    assert await suggestions("flux klein-4b", "BLOT") == ["Inkblot"]
    assert await suggestions("flux klein-9b", "") == ["Ink Nine"]
    pro = world.discord.command("flux", guild_id=world.guild.id)
    assert pro is not None
    [pro_command] = [o for o in pro["options"] if o["name"] == "pro"]
    assert "lora" not in {o["name"] for o in pro_command["options"]}


async def test_a_lora_goes_to_its_finetuned_endpoint_and_reroll_after_a_restart_sends_the_same(
    world: World,
) -> None:
    world.bfl.register_lora("ink-wash_v2", "klein-base-4b")
    bot = await world.start_bot()
    mod = add_moderator(world)
    await lora_add(
        world,
        mod,
        name="Ink Wash",
        finetune_id="ink-wash_v2",
        base="klein-base-4b",
        strength=0.8,
        trigger="Sumi-e style",
    )
    before = world.newest_message_id()
    await world.discord.invoke_slash(
        world.alice,
        world.channel,
        "flux klein-4b",
        {"prompt": "a heron in the reeds", "lora": "Ink Wash"},
    )
    result = await world.result_after(before)

    [submission] = world.bfl.submissions
    assert submission.endpoint == "flux-2-klein-base-4b-finetuned"
    assert submission.body["finetune_id"] == "ink-wash_v2"
    assert submission.body["finetune_strength"] == 0.8
    assert submission.body["prompt"] == "Sumi-e style, a heron in the reeds"
    assert result.attachments[0].data == world.bfl.image_bytes(submission.task_id or "")
    assert embed_fields(result)["Model"] == "FLUX.2 [klein] 4B + LoRA “Ink Wash”"
    job_id = job_id_of(result)
    ledger = await bot.services.db.fetch_one(
        "SELECT user_id, variant, status, charged_mc FROM ledger WHERE job_id = ?", (job_id,)
    )
    assert ledger is not None
    assert (ledger["user_id"], ledger["variant"], ledger["status"]) == (
        world.alice.id,
        "klein-4b",
        "charged",
    )
    assert ledger["charged_mc"] == 1400  # the base model's price (the stand-in's quote)

    history = await world.discord.invoke_slash(world.alice, world.channel, "history")
    assert "FLUX.2 [klein] 4B + LoRA “Ink Wash”" in await private_text(history)

    # A new process (a restart) rerolls it: the same LoRA, strength and endpoint.
    await world.stop_bot(bot)
    await world.start_bot()
    before = world.newest_message_id()
    await world.discord.click(world.bob, result, f"flux:reroll:{job_id}")
    await world.result_after(before)
    first, second = world.bfl.submissions
    assert second.endpoint == "flux-2-klein-base-4b-finetuned"
    assert {k: v for k, v in second.body.items() if k not in ("seed", "user")} == {
        k: v for k, v in first.body.items() if k not in ("seed", "user")
    }


async def test_a_prompt_with_the_trigger_already_is_sent_as_typed(world: World) -> None:
    world.bfl.register_lora("ink", "klein-4b")
    await world.start_bot()
    mod = add_moderator(world)
    await lora_add(world, mod, name="Ink", finetune_id="ink", base="klein-4b", trigger="sumi-e")
    before = world.newest_message_id()
    await world.discord.invoke_slash(
        world.alice, world.channel, "flux klein-4b", {"prompt": "a SUMI-E heron", "lora": "ink"}
    )
    await world.result_after(before)
    [submission] = world.bfl.submissions
    assert submission.endpoint == "flux-2-klein-4b-finetuned"
    assert submission.body["prompt"] == "a SUMI-E heron"
    assert submission.body["finetune_strength"] == 1.0


async def test_an_unknown_or_mismatched_lora_is_refused_privately_and_nothing_is_charged(
    world: World,
) -> None:
    bot = await world.start_bot()
    mod = add_moderator(world)
    await lora_add(world, mod, name="Nine", finetune_id="nine", base="klein-9b")
    unknown = await world.discord.invoke_slash(
        world.alice, world.channel, "flux klein-4b", {"prompt": "a fox", "lora": "Ink Wash"}
    )
    assert await world.refusal(unknown) == (
        "This server has no LoRA called `Ink Wash`. Pick one from the list that appears as "
        "you type (moderators: /settings loras)."
    )
    mismatched = await world.discord.invoke_slash(
        world.alice, world.channel, "flux klein-4b", {"prompt": "a fox", "lora": "Nine"}
    )
    assert await world.refusal(mismatched) == (
        "The LoRA “Nine” is made for klein 9B, so it works with the 9B klein models only."
    )
    assert world.bfl.submissions == []
    assert await bot.services.db.fetch_value("SELECT count(*) FROM ledger") == 0
    assert await bot.services.db.fetch_value("SELECT count(*) FROM jobs") == 0


async def test_rerolling_an_image_whose_lora_was_removed_says_so(world: World) -> None:
    world.bfl.register_lora("ink", "klein-4b")
    bot = await world.start_bot()
    mod = add_moderator(world)
    await lora_add(world, mod, name="Ink", finetune_id="ink", base="klein-4b")
    before = world.newest_message_id()
    await world.discord.invoke_slash(
        world.alice, world.channel, "flux klein-4b", {"prompt": "a heron", "lora": "Ink"}
    )
    result = await world.result_after(before)
    removal = await world.discord.invoke_slash(
        mod, world.channel, "settings lora-remove", {"name": "Ink"}
    )
    assert (await private_text(removal)).startswith("Removed **Ink**")
    click = await world.discord.click(world.bob, result, f"flux:reroll:{job_id_of(result)}")
    assert await world.refusal(click) == (
        "The LoRA “Ink” this image used has been removed from this server's catalogue, so it "
        "can't be made again with it. Pick another LoRA, or make it without one."
    )
    assert len(world.bfl.submissions) == 1
    assert await bot.services.db.fetch_value("SELECT count(*) FROM ledger") == 1


async def test_a_lora_bfl_does_not_have_fails_with_its_reason_and_is_refunded(
    world: World,
) -> None:
    bot = await world.start_bot()  # nothing registered at the stand-in's account
    mod = add_moderator(world)
    await lora_add(world, mod, name="Ghost", finetune_id="not-uploaded", base="klein-9b")
    await world.discord.invoke_slash(
        world.alice, world.channel, "flux klein-9b", {"prompt": "a heron", "lora": "Ghost"}
    )
    failure = await world.discord.wait_for_message(
        lambda m: m.content.startswith("❌"), channel_id=world.channel.id, timeout=10
    )
    assert "not-uploaded" in failure.content and "not found" in failure.content
    [submission] = world.bfl.submissions
    assert (submission.endpoint, submission.status) == ("flux-2-klein-9b-finetuned", 422)
    assert await bot.services.db.fetch_value("SELECT status FROM ledger") == "refunded"


async def test_remix_keeps_the_lora_where_the_model_takes_it(world: World) -> None:
    world.bfl.register_lora("ink", "klein-base-4b")
    await world.start_bot()
    mod = add_moderator(world)
    await lora_add(
        world,
        mod,
        name="Ink",
        finetune_id="ink",
        base="klein-base-4b",
        strength=0.7,
        trigger="sumi",
    )
    before = world.newest_message_id()
    await world.discord.invoke_slash(
        world.alice, world.channel, "flux klein-4b", {"prompt": "a heron", "lora": "Ink"}
    )
    result = await world.result_after(before)

    async def remix(prompt: str, variant: str) -> None:
        it = await world.discord.click(world.alice, result, f"flux:remix:{job_id_of(result)}")
        modal = await it.response()
        assert modal.data is not None
        before = world.newest_message_id()
        await world.discord.submit_modal(
            world.alice,
            world.channel,
            modal.data["custom_id"],
            {"prompt": prompt, "variant": variant, "size": "", "seed": ""},
        )
        await world.result_after(before)

    await remix("a crane", "klein-4b")
    same = world.bfl.submissions[-1]
    assert same.endpoint == "flux-2-klein-base-4b-finetuned"
    assert (same.body["prompt"], same.body["finetune_id"], same.body["finetune_strength"]) == (
        "sumi, a crane",
        "ink",
        0.7,
    )
    await remix("a crane", "klein-9b")  # a 4B LoRA can't go with 9B: made without it
    other = world.bfl.submissions[-1]
    assert other.endpoint == "flux-2-klein-9b" and "finetune_id" not in other.body
