"""The catalogue's validation: what each variant accepts and the exact refusals users see."""

from __future__ import annotations

import hashlib
import random

import pytest

from bot.catalogue import CATALOGUE, available_variants, get_variant
from bot.errors import InvalidRequest
from bot.providers.base import InputImage
from bot.providers.bfl import build_payload, hash_user
from bot.variants import SEED_MAX, ReferenceSize

BFL_KEYS = ["pro", "max", "flex", "klein-4b", "klein-9b", "pro-preview", "klein-9b-preview"]


def refs(count: int, size: int = 512) -> list[ReferenceSize]:
    return [ReferenceSize(size, size)] * count


@pytest.mark.parametrize("key", BFL_KEYS)
def test_every_bfl_variant_accepts_a_plain_prompt_and_fills_defaults(key: str) -> None:
    variant = get_variant(key)
    params = variant.validate("  a red fox in snow  ", rng=random.Random(1))
    assert params.prompt == "a red fox in snow"
    assert params.width is None and params.height is None
    assert 0 <= params.seed <= SEED_MAX
    assert set(params.options) == {spec.name for spec in variant.options}
    assert params.options["safety_tolerance"] == 2
    assert params.options["output_format"] == "jpeg"


def test_variant_option_sets_are_exactly_their_own() -> None:
    names = {key: {s.name for s in CATALOGUE[key].options} for key in BFL_KEYS}
    common = {"safety_tolerance", "output_format"}
    assert names["pro"] == names["max"] == common | {"prompt_upsampling"}
    assert names["flex"] == common | {"steps", "guidance", "prompt_upsampling"}
    assert names["klein-4b"] == names["klein-9b"] == common


@pytest.mark.parametrize(
    ("width", "height", "message"),
    [
        (1000, 1024, "The width must be a multiple of 16 (got 1000)."),
        (1024, 1000, "The height must be a multiple of 16 (got 1000)."),
        (48, 1024, "The width must be at least 64 pixels."),
        (2064, 2048, "2064×2048 is 4.03 MP; the limit is 4 MP."),
    ],
)
def test_size_rules(width: int, height: int, message: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        get_variant("pro").validate("x", width=width, height=height)
    assert str(caught.value) == message


def test_largest_allowed_size_is_exactly_four_megapixels() -> None:
    params = get_variant("pro").validate("x", width=2048, height=2048)
    assert (params.width, params.height) == (2048, 2048)


def test_width_without_height_is_refused() -> None:
    with pytest.raises(InvalidRequest, match="Give both a width and a height"):
        get_variant("pro").validate("x", width=1024)


def test_size_preset_resolves_and_conflicts_with_explicit_size() -> None:
    variant = get_variant("klein-4b")
    params = variant.validate("x", size_preset="landscape_16_9")
    assert (params.width, params.height) == (1360, 768)
    with pytest.raises(InvalidRequest, match="either a size preset or a width and height"):
        variant.validate("x", size_preset="square_1mp", width=512, height=512)
    with pytest.raises(InvalidRequest, match="no size called “huge”"):
        variant.validate("x", size_preset="huge")


def test_every_preset_obeys_the_bfl_size_rule() -> None:
    for key in BFL_KEYS:
        variant = get_variant(key)
        assert len(variant.size_presets()) == 8
        for width, height in variant.size_presets().values():
            variant.sizes.check(width, height)


@pytest.mark.parametrize(
    ("key", "options", "message"),
    [
        ("flex", {"steps": 0}, "steps must be between 1 and 50."),
        ("flex", {"steps": 51}, "steps must be between 1 and 50."),
        ("flex", {"steps": 2.5}, "steps must be a whole number."),
        ("flex", {"guidance": 1.4}, "guidance must be between 1.5 and 10."),
        ("flex", {"guidance": 10.5}, "guidance must be between 1.5 and 10."),
        ("pro", {"safety_tolerance": 6}, "safety tolerance must be between 0 and 5."),
        ("pro", {"safety_tolerance": -1}, "safety tolerance must be between 0 and 5."),
        ("pro", {"output_format": "gif"}, "output format must be one of: jpeg, png, webp."),
        ("pro", {"prompt_upsampling": "yes"}, "prompt upsampling must be true or false."),
        ("klein-4b", {"steps": 20}, "FLUX.2 [klein] 4B has no option steps."),
        ("pro", {"guidance": 3}, "FLUX.2 [pro] has no option guidance."),
    ],
)
def test_option_ranges(key: str, options: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        get_variant(key).validate("x", options=options)
    assert str(caught.value) == message


def test_option_edges_are_inclusive() -> None:
    flex = get_variant("flex")
    params = flex.validate("x", options={"steps": 1, "guidance": 10, "safety_tolerance": 0})
    assert params.options == {
        "steps": 1,
        "guidance": 10.0,
        "prompt_upsampling": True,
        "safety_tolerance": 0,
        "output_format": "jpeg",
    }


@pytest.mark.parametrize(
    ("key", "limit"), [("pro", 8), ("max", 8), ("flex", 8), ("klein-4b", 4), ("klein-9b", 4)]
)
def test_reference_count_limit_is_named(key: str, limit: int) -> None:
    variant = get_variant(key)
    variant.validate("x", references=refs(limit))
    with pytest.raises(InvalidRequest) as caught:
        variant.validate("x", references=refs(limit + 1))
    assert str(caught.value) == (
        f"{variant.label} accepts at most {limit} reference images; you gave {limit + 1}."
    )


def test_prompt_must_not_be_blank_or_too_long() -> None:
    with pytest.raises(InvalidRequest, match="Please give a prompt"):
        get_variant("pro").validate("   ")
    with pytest.raises(InvalidRequest, match="The prompt is 4001 characters"):
        get_variant("pro").validate("a" * 4001)


def test_seed_range() -> None:
    assert get_variant("pro").validate("x", seed=SEED_MAX).seed == SEED_MAX
    with pytest.raises(InvalidRequest, match="The seed must be between 0 and"):
        get_variant("pro").validate("x", seed=SEED_MAX + 1)


def test_unknown_variant() -> None:
    with pytest.raises(InvalidRequest, match="no FLUX\\.2 variant called “turbo”"):
        get_variant("turbo")


def test_preview_variants_only_when_enabled() -> None:
    assert set(available_variants(include_preview=False, providers=["bfl"])) == {
        "pro",
        "max",
        "flex",
        "klein-4b",
        "klein-9b",
    }
    assert "pro-preview" in available_variants(include_preview=True, providers=["bfl"])
    assert available_variants(include_preview=True, providers=[]) == {}


@pytest.mark.parametrize("prefer_aiml", [False, True])
def test_the_aiml_max_backup_is_never_offered_as_a_command(prefer_aiml: bool) -> None:
    both = available_variants(
        include_preview=True, providers=["bfl", "aiml"], prefer_aiml=prefer_aiml
    )
    assert "max-aiml" not in both and both["max"].provider == "bfl"
    assert "max" not in available_variants(include_preview=True, providers=["aiml"])
    assert get_variant("max-aiml").endpoint == "blackforestlabs/flux-2-max"  # jobs may name it


@pytest.mark.parametrize(
    ("key", "width", "height", "reference_px", "expected"),
    [
        ("pro", 1024, 1024, [], 3.0),
        ("pro", 2048, 1024, [], 4.5),
        ("pro", 1024, 1024, [1024 * 1024], 4.5),
        ("max", 1024, 1024, [], 7.0),
        ("flex", 2048, 2048, [], 20.0),
        ("klein-4b", 1024, 1024, [], 1.4),
        ("klein-9b", 2048, 1024, [1024 * 512], 1.8),
    ],
)
def test_cost_estimates_follow_the_published_pricing(
    key: str, width: int, height: int, reference_px: list[int], expected: float
) -> None:
    variant = get_variant(key)
    params = variant.validate("x", width=width, height=height)
    references = [ReferenceSize(px // 1024, 1024) for px in reference_px]
    assert variant.estimate_cost(params, references) == expected


def test_payload_for_pro_maps_upsampling_to_disable_pup_and_numbers_inputs() -> None:
    variant = get_variant("pro")
    params = variant.validate(
        "cat", seed=7, width=512, height=512, options={"prompt_upsampling": False}
    )
    images = [InputImage("image/png", 1, 1, b"A"), InputImage("image/png", 1, 1, b"B")]
    body = build_payload(variant, params, images, user="member-tag")
    assert body == {
        "prompt": "cat",
        "seed": 7,
        "width": 512,
        "height": 512,
        "disable_pup": True,
        "safety_tolerance": 2,
        "output_format": "jpeg",
        "input_image": "QQ==",
        "input_image_2": "Qg==",
        "user": "member-tag",
    }


def test_the_member_id_sent_to_bfl_is_keyed_stable_and_opaque() -> None:
    key, other_key = b"k" * 32, b"o" * 32
    tag = hash_user(1234567890123, key)
    assert tag == hash_user(1234567890123, key)  # one member, one id, in every process
    assert tag != hash_user(1234567890124, key)
    # Without the key, hashing every Discord id gets nowhere: another key, another id.
    assert tag != hash_user(1234567890123, other_key)
    assert tag != hashlib.sha256(b"1234567890123").hexdigest()[:32]
    assert 1 <= len(tag) <= 256 and "1234567890123" not in tag


# ---------------------------------------------------------------------- LoRA paths
NOT_AN_ADDRESS = r"must name a public host \(like huggingface.co\), not an IP address"


@pytest.mark.parametrize(
    "path",
    [
        "someone/watercolor-lora",
        "https://huggingface.co/someone/watercolor/resolve/main/lora.safetensors",
        "https://civitai.com/api/download/models/12345",
        "https://cdn.example.org:443/l.safetensors",
    ],
)
def test_lora_accepts_a_repo_or_an_https_url_on_a_public_host(path: str) -> None:
    params = get_variant("lora").validate("a castle", options={"lora_1": path})
    assert params.options["lora_1"] == path


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("http://huggingface.co/a/b.safetensors", "must be an https URL or a Hugging Face repo"),
        ("ftp://example.com/a", "must be an https URL or a Hugging Face repo"),
        ("https://127.0.0.1/a", NOT_AN_ADDRESS),
        ("https://[::1]/a", NOT_AN_ADDRESS),
        ("https://169.254.169.254/latest/meta-data", NOT_AN_ADDRESS),
        ("https://127.1/a", "must name a public host"),
        ("https://localhost/a", "must name a public host"),
        ("https://printer.local/a", "must name a public host"),
        ("https://metadata.google.internal/a", "must name a public host"),
        ("https://intranet/a", "must name a public host"),
        ("https://huggingface.co:8443/a", "must use the standard https port"),
        ("https://user:secret@huggingface.co/a", "must not contain a user name or password"),
        ("https://huggingface.co:99999/a", "must be an https URL or a Hugging Face repo"),
    ],
)
def test_lora_refuses_other_schemes_and_private_hosts_clearly(path: str, reason: str) -> None:
    with pytest.raises(InvalidRequest, match=rf"^lora 2 {reason}"):
        get_variant("lora").validate("a castle", options={"lora_2": path})
