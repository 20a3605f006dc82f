"""Everything the bot knows about Black Forest Labs' FLUX.2 options, in one place.

The sizes BFL accepts, the options we offer for its models (what a member sees in Discord
and which API field each one sets), their prices, and the catalogue entries built from them.
`bot/providers/bfl.py` sends an entry's options as they are declared here; `bot/catalogue.py`
lists the entries. Change a BFL option, limit or price here.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import partial
from typing import Final

from bot.variants import (
    MEGAPIXEL,
    OUTPUT_FORMAT,
    OptionKind,
    OptionSpec,
    Pricing,
    SizeRule,
    Variant,
)

SIZES: Final = SizeRule(min_side=64, max_side=None, multiple=16, max_pixels=4 * MEGAPIXEL)

SAFETY_TOLERANCE: Final = OptionSpec(
    "safety_tolerance",
    OptionKind.INT,
    "Moderation strictness: 0 strictest, 5 most lenient",
    default=2,
    minimum=0,
    maximum=5,
)
# Every BFL model takes these, after its own options.
COMMON_OPTIONS: Final = (SAFETY_TOLERANCE, OUTPUT_FORMAT)

PROMPT_UPSAMPLING: Final = OptionSpec(
    "prompt_upsampling",
    OptionKind.BOOL,
    "Let the model expand your prompt",
    default=True,
    api_field="disable_pup",
    negate=True,  # our `prompt_upsampling=True` is BFL's `disable_pup=False`
)
FLEX_OPTIONS: Final = (
    OptionSpec(
        "steps",
        OptionKind.INT,
        "Sampling steps (more is slower, finer)",
        default=50,
        minimum=1,
        maximum=50,
    ),
    OptionSpec(
        "guidance",
        OptionKind.FLOAT,
        "How closely to follow the prompt",
        default=4.5,
        minimum=1.5,
        maximum=10,
    ),
    OptionSpec(
        "prompt_upsampling",
        OptionKind.BOOL,
        "Let the model expand your prompt",
        default=True,
    ),
)

_PRO_PRICING: Final = Pricing(first_mp=3.0, per_extra_mp=1.5)
_KLEIN_9B_PRICING: Final = Pricing(first_mp=1.5, per_extra_mp=0.2)

_bfl = partial(Variant, provider="bfl", sizes=SIZES)

PRO: Final = _bfl(
    key="pro",
    label="FLUX.2 [pro]",
    description="Best default for generating and editing",
    endpoint="/v1/flux-2-pro",
    max_references=8,
    pricing=_PRO_PRICING,
    options=(PROMPT_UPSAMPLING, *COMMON_OPTIONS),
)
MAX: Final = _bfl(
    key="max",
    label="FLUX.2 [max]",
    description="Highest quality, with grounded web search",
    endpoint="/v1/flux-2-max",
    max_references=8,
    pricing=Pricing(7.0, 3.0),
    options=(PROMPT_UPSAMPLING, *COMMON_OPTIONS),
)
FLEX: Final = _bfl(
    key="flex",
    label="FLUX.2 [flex]",
    description="Tunable steps and guidance, strong typography",
    endpoint="/v1/flux-2-flex",
    max_references=8,
    pricing=Pricing(5.0, 5.0),
    options=(*FLEX_OPTIONS, *COMMON_OPTIONS),
)
KLEIN_4B: Final = _bfl(
    key="klein-4b",
    label="FLUX.2 [klein] 4B",
    description="Fastest and cheapest",
    endpoint="/v1/flux-2-klein-4b",
    max_references=4,
    pricing=Pricing(1.4, 0.1),
    options=COMMON_OPTIONS,
    lora_size="4b",
)
KLEIN_9B: Final = _bfl(
    key="klein-9b",
    label="FLUX.2 [klein] 9B",
    description="Fast, better quality than 4B",
    endpoint="/v1/flux-2-klein-9b",
    max_references=4,
    pricing=_KLEIN_9B_PRICING,
    options=COMMON_OPTIONS,
    lora_size="9b",
)
# A preview is its model with the latest improvements first: same options, limits and price.
PRO_PREVIEW: Final = replace(
    PRO,
    key="pro-preview",
    label="FLUX.2 [pro] preview",
    description="Pro with the latest improvements first",
    endpoint="/v1/flux-2-pro-preview",
    preview=True,
)
KLEIN_9B_PREVIEW: Final = replace(
    KLEIN_9B,
    key="klein-9b-preview",
    label="FLUX.2 [klein] 9B preview",
    description="Klein 9B with the latest improvements first",
    endpoint="/v1/flux-2-klein-9b-preview",
    preview=True,
)


# --------------------------------------------------------------------------- klein LoRAs
@dataclass(frozen=True)
class LoraBase:
    """A klein base model LoRAs are uploaded for, and its `-finetuned` endpoint (public beta):
    the endpoint must match the LoRA's base, or BFL refuses the call."""

    key: str
    label: str
    endpoint: str
    size: str  # the klein commands (Variant.lora_size) whose requests may use it


LORA_BASES: Final[dict[str, LoraBase]] = {
    base.key: base
    for base in (
        LoraBase("klein-4b", "klein 4B", "/v1/flux-2-klein-4b-finetuned", "4b"),
        LoraBase("klein-9b", "klein 9B", "/v1/flux-2-klein-9b-finetuned", "9b"),
        LoraBase("klein-9b-kv", "klein 9B KV", "/v1/flux-2-klein-9b-kv-finetuned", "9b"),
        LoraBase(
            "klein-9b-kv-bf16", "klein 9B KV bf16", "/v1/flux-2-klein-9b-kv-bf16-finetuned", "9b"
        ),
        LoraBase("klein-base-4b", "klein base 4B", "/v1/flux-2-klein-base-4b-finetuned", "4b"),
        LoraBase("klein-base-9b", "klein base 9B", "/v1/flux-2-klein-base-9b-finetuned", "9b"),
    )
}
# finetune_strength: BFL's default, and the range we let moderators choose (BFL suggests
# 0.7–0.9 for a LoRA that overpowers the prompt; past 2 images fall apart).
LORA_STRENGTH_DEFAULT: Final = 1.0
LORA_STRENGTH_MIN: Final = 0.1
LORA_STRENGTH_MAX: Final = 2.0


# Outpainting (`FluxOutpaintingInputs`): a tool, asked for by the result buttons (Zoom out,
# pan, Make square), never a slash command. bot/providers/bfl.py `build_outpaint_payload`
# sends exactly the schema's fields (it has `additionalProperties: false` and no webhook).
OUTPAINT_MODES: Final = ("high", "fast")
_OFFSET_LIMIT: Final = 16384
OUTPAINT: Final = _bfl(
    key="outpaint",
    label="FLUX outpainting",
    description="Zoom out, pan or make square a result",
    endpoint="/v1/flux-tools/outpainting-v1",
    max_references=1,
    # BFL does not publish outpainting's price: a conservative estimate (above pro's rates,
    # per output and input megapixel) reserved up front; BFL's returned cost is charged.
    pricing=Pricing(first_mp=6.0, per_extra_mp=3.0),
    options=(
        OptionSpec(
            "reference_offset_x",
            OptionKind.INT,
            "Left edge of the image on the canvas, px (none: centred)",
            default=None,
            minimum=-_OFFSET_LIMIT,
            maximum=_OFFSET_LIMIT,
        ),
        OptionSpec(
            "reference_offset_y",
            OptionKind.INT,
            "Top edge of the image on the canvas, px (none: centred)",
            default=None,
            minimum=-_OFFSET_LIMIT,
            maximum=_OFFSET_LIMIT,
        ),
        OptionSpec(
            "mode",
            OptionKind.CHOICE,
            "high fidelity, or much faster",
            default="high",
            choices=OUTPAINT_MODES,
        ),
        PROMPT_UPSAMPLING,
        *COMMON_OPTIONS,
    ),
    tool=True,
    webhooks=False,
)
