"""The server LoRA catalogue's rules (bot/servers/loras.py) and what a LoRA job sends to BFL."""

from __future__ import annotations

import pytest

from bot.catalogue import CATALOGUE
from bot.errors import InvalidRequest
from bot.providers.bfl import build_payload, endpoint_for
from bot.servers.audit import AuditLog
from bot.servers.loras import LoraCatalogue, validate_lora, with_trigger
from bot.storage.db import Database
from bot.variants import JobParams, LoraChoice

KLEIN_4B, KLEIN_9B, PRO = CATALOGUE["klein-4b"], CATALOGUE["klein-9b"], CATALOGUE["pro"]
GUILD = 42


@pytest.mark.parametrize(
    ("prompt", "trigger", "sent"),
    [
        ("a heron", "sumi-e style", "sumi-e style, a heron"),
        ("a heron in SUMI-E STYLE", "sumi-e style", "a heron in SUMI-E STYLE"),
        ("a heron", None, "a heron"),
    ],
)
def test_the_trigger_phrase_is_added_only_when_missing(
    prompt: str, trigger: str | None, sent: str
) -> None:
    lora = LoraChoice("Ink", "ink", 1.0, "/v1/flux-2-klein-4b-finetuned", trigger)
    assert with_trigger(prompt, lora) == sent
    assert with_trigger("   ", lora) == "   "  # refused as blank, not sent as the trigger


@pytest.mark.parametrize(
    "finetune_id", ["my-style", "style_2", "0a1b2c/shared-style", "Org-ID_1/name"]
)
def test_finetune_ids_as_bfl_names_them(finetune_id: str) -> None:
    assert validate_lora(GUILD, "Style", finetune_id, "klein-4b", None, None).finetune_id == (
        finetune_id
    )


@pytest.mark.parametrize(
    ("name", "finetune_id", "base", "strength", "problem"),
    [
        ("Style", "My-Style", "klein-4b", None, "is not a BFL finetune id"),
        ("Style", "a/b/c", "klein-4b", None, "is not a BFL finetune id"),
        ("Style", "style", "pro", None, "The base must be one of"),
        ("Style", "style", "klein-4b", 0.0, "The strength must be between 0.1 and 2"),
        ("Style", "style", "klein-4b", float("nan"), "The strength must be between"),
        ("<@&1>", "style", "klein-4b", None, "A LoRA's name is 1 to 40 characters"),
        ("x" * 41, "style", "klein-4b", None, "A LoRA's name is 1 to 40 characters"),
    ],
)
def test_a_bad_entry_says_what_is_wrong(
    name: str, finetune_id: str, base: str, strength: float | None, problem: str
) -> None:
    with pytest.raises(InvalidRequest, match=problem):
        validate_lora(GUILD, name, finetune_id, base, strength, None)


def test_defaults_and_tidying() -> None:
    lora = validate_lora(GUILD, "  Ink   Wash ", " ink ", "klein-base-9b", None, "  sumi   e ")
    assert (lora.name, lora.finetune_id, lora.strength, lora.trigger) == (
        "Ink Wash",
        "ink",
        1.0,
        "sumi e",
    )
    assert lora.choice().endpoint == "/v1/flux-2-klein-base-9b-finetuned"


async def test_resolve_checks_the_server_the_model_and_what_a_stored_job_used(
    db: Database,
) -> None:
    catalogue = LoraCatalogue(db, AuditLog(db, audit_channel=lambda guild: None))
    await catalogue.add(GUILD, 1, name="Ink", finetune_id="ink", base="klein-base-4b")
    chosen = catalogue.resolve(GUILD, KLEIN_4B, "  INK ")
    assert chosen == LoraChoice("Ink", "ink", 1.0, "/v1/flux-2-klein-base-4b-finetuned")
    with pytest.raises(InvalidRequest, match="works with the 4B klein models only"):
        catalogue.resolve(GUILD, KLEIN_9B, "Ink")
    with pytest.raises(InvalidRequest, match="doesn't take LoRAs"):
        catalogue.resolve(GUILD, PRO, "Ink")
    with pytest.raises(InvalidRequest, match="has no LoRA called"):
        catalogue.resolve(GUILD + 1, KLEIN_4B, "Ink")  # another server's
    with pytest.raises(InvalidRequest, match="use them in that server"):
        catalogue.resolve(None, KLEIN_4B, "Ink")
    # A stored job's choice is sent as it was (its strength), while the server has the LoRA.
    stored = LoraChoice("Ink", "ink", 0.7, "/v1/flux-2-klein-base-4b-finetuned")
    assert catalogue.resolve(GUILD, KLEIN_4B, stored) is stored
    await catalogue.remove(GUILD, 1, "ink")
    with pytest.raises(InvalidRequest, match="has been removed"):
        catalogue.resolve(GUILD, KLEIN_4B, stored)
    # Re-registered under the same name for another finetune: not the LoRA the image used.
    await catalogue.add(GUILD, 1, name="Ink", finetune_id="ink-v2", base="klein-base-4b")
    with pytest.raises(InvalidRequest, match="has been removed"):
        catalogue.resolve(GUILD, KLEIN_4B, stored)


async def test_the_catalogue_survives_a_reload_and_refuses_duplicates(db: Database) -> None:
    audit = AuditLog(db, audit_channel=lambda guild: None)
    catalogue = LoraCatalogue(db, audit)
    await catalogue.add(
        GUILD, 1, name="Ink", finetune_id="ink", base="klein-4b", strength=0.8, trigger="sumi"
    )
    with pytest.raises(InvalidRequest, match="already has a LoRA called"):
        await catalogue.add(GUILD, 1, name="ink", finetune_id="other", base="klein-4b")
    fresh = LoraCatalogue(db, audit)
    await fresh.load()
    assert fresh.server_loras(GUILD) == catalogue.server_loras(GUILD)
    assert [lora.name for lora in fresh.compatible(GUILD, KLEIN_4B)] == ["Ink"]
    assert fresh.compatible(GUILD, KLEIN_9B) == []


def test_a_lora_job_keeps_its_lora_in_its_params_and_sends_it() -> None:
    lora = LoraChoice("Ink", "ink", 0.8, "/v1/flux-2-klein-base-4b-finetuned", "sumi")
    params = JobParams("sumi, a heron", None, None, 5, {"safety_tolerance": 2}, lora=lora)
    assert JobParams.from_json(params.to_json()) == params
    # Jobs stored before LoRAs existed read the same as before.
    plain = JobParams("a heron", None, None, 5, {"safety_tolerance": 2})
    assert "lora" not in plain.to_json() and JobParams.from_json(plain.to_json()) == plain
    options = {"safety_tolerance": 2, "output_format": "jpeg"}
    body = build_payload(KLEIN_4B, JobParams("a", None, None, 1, options, lora=lora), [], user="m")
    assert (body["finetune_id"], body["finetune_strength"]) == ("ink", 0.8)
    assert endpoint_for(KLEIN_4B, params) == "/v1/flux-2-klein-base-4b-finetuned"
    assert endpoint_for(KLEIN_4B, plain) == "/v1/flux-2-klein-4b"
    plain_body = build_payload(KLEIN_4B, JobParams("a", None, None, 1, options), [], user="m")
    assert "finetune_id" not in plain_body
