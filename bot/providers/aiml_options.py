"""Everything the bot knows about the AI/ML API's FLUX.2 options, in one place.

* the API's models and the limits its documentation gives: sizes, reference images, LoRAs,
  images per request, prompt length, seeds, the accepted values of each body field;
* the options we offer for them (`OptionSpec`s: what a member sees in Discord and which API
  field each one sets), their prices, and the three catalogue entries built from them
  (`dev`, `lora`, `pro-aiml`, listed in `bot/catalogue.py`), and `max-aiml`, only ever the
  backup of BFL's `max` (FAILOVER=aiml, bot/jobs/failover.py);
* the rule for a LoRA path.

`bot/providers/aiml_payload.py` checks every body field against these same declarations
before a request is sent, so a limit changed here is changed for both the member's request
and the API body.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from functools import partial
from typing import Final, Literal
from urllib.parse import urlsplit

from bot.variants import OUTPUT_FORMAT, OptionKind, OptionSpec, Pricing, SizeRule, Variant

# ---------------------------------------------------------------------- the API's limits
PROMPT_MAX_CHARS: Final = 4000
MIN_SIDE: Final = 512
MAX_SIDE: Final = 2048
SIDE_MULTIPLE: Final = 32
SIZES: Final = SizeRule(
    min_side=MIN_SIDE, max_side=MAX_SIDE, multiple=SIDE_MULTIPLE, max_pixels=MAX_SIDE * MAX_SIDE
)
MAX_IMAGE_URLS: Final = 3
MAX_LORAS: Final = 3
MAX_NUM_IMAGES: Final = 4
MIN_SEED: Final = 1  # the API wants seed >= 1
IMAGE_SIZE_PRESETS: Final = (
    "square_hd",
    "square",
    "portrait_4_3",
    "portrait_16_9",
    "landscape_4_3",
    "landscape_16_9",
)
DEFAULT_SIZE: Final = (1024, 1024)  # our text-to-image default, the same as BFL's
TARGET_EDIT_PIXELS: Final = 1024 * 1024  # edits without a size: the first reference at ~1 MP

Family = Literal["dev", "lora", "pro"]


@dataclass(frozen=True)
class AIMLModel:
    name: str
    family: Family
    edit: bool  # takes (and requires) 1–3 image_urls


MODELS: Final[dict[str, AIMLModel]] = {
    m.name: m
    for m in (
        AIMLModel("blackforestlabs/flux-2", "dev", False),
        AIMLModel("blackforestlabs/flux-2-edit", "dev", True),
        AIMLModel("blackforestlabs/flux-2-lora", "lora", False),
        AIMLModel("blackforestlabs/flux-2-lora-edit", "lora", True),
        AIMLModel("blackforestlabs/flux-2-pro", "pro", False),
        AIMLModel("blackforestlabs/flux-2-pro-edit", "pro", True),
        # [max], as pro's fields (no edit twin is listed: it takes no references here).
        AIMLModel("blackforestlabs/flux-2-max", "pro", False),
    )
}
# The catalogue's endpoints: "-edit" is appended when references are given.
DEV_MODEL: Final = "blackforestlabs/flux-2"
LORA_MODEL: Final = "blackforestlabs/flux-2-lora"
PRO_MODEL: Final = "blackforestlabs/flux-2-pro"
MAX_MODEL: Final = "blackforestlabs/flux-2-max"

# ---------------------------------------------------------------------- our options
GUIDANCE: Final = OptionSpec(
    "guidance",
    OptionKind.FLOAT,
    "How closely to follow the prompt",
    default=2.5,
    minimum=0,
    maximum=20,
    api_field="guidance_scale",
)
STEPS: Final = OptionSpec(
    "steps",
    OptionKind.INT,
    "Sampling steps (more is slower, finer)",
    default=28,
    minimum=4,
    maximum=50,
    api_field="num_inference_steps",
)
ACCELERATION: Final = OptionSpec(
    "acceleration",
    OptionKind.CHOICE,
    "Faster generation at some cost in quality",
    default="regular",
    choices=("none", "regular", "high"),
)
PROMPT_EXPANSION: Final = OptionSpec(
    "prompt_upsampling",
    OptionKind.BOOL,
    "Let the model expand your prompt",
    default=False,
    api_field="enable_prompt_expansion",
)
NUM_IMAGES: Final = OptionSpec(
    "num_images",
    OptionKind.INT,
    "How many images to make (posted together)",
    default=1,
    minimum=1,
    maximum=MAX_NUM_IMAGES,
)
SAFETY_TOLERANCE: Final = OptionSpec(  # pro only; the API wants it as a string "1"–"6"
    "safety_tolerance",
    OptionKind.INT,
    "Moderation strictness: 1 strictest, 6 most lenient",
    default=2,
    minimum=1,
    maximum=6,
)
DEV_OPTIONS: Final = (GUIDANCE, STEPS, ACCELERATION, PROMPT_EXPANSION, NUM_IMAGES, OUTPUT_FORMAT)
PRO_OPTIONS: Final = (SAFETY_TOLERANCE, OUTPUT_FORMAT)

# The API fields a request may set, by model family: those our options set, and the safety
# checker switch (documented for every model, not offered to members).
SAFETY_CHECKER_FIELD: Final = "enable_safety_checker"
DEV_FIELDS: Final = frozenset({spec.api_name for spec in DEV_OPTIONS} | {SAFETY_CHECKER_FIELD})
PRO_FIELDS: Final = frozenset({spec.api_name for spec in PRO_OPTIONS} | {SAFETY_CHECKER_FIELD})
# Every body field, for finding which one a 400 message is about.
BODY_FIELDS: Final = (
    "image_urls",
    "image_size",
    "num_images",
    "guidance_scale",
    "num_inference_steps",
    "acceleration",
    "enable_prompt_expansion",
    "enable_safety_checker",
    "safety_tolerance",
    "output_format",
    "loras",
    "prompt",
    "seed",
    "model",
)

# ---------------------------------------------------------------------- LoRAs
# An https URL or a Hugging Face repo id (owner/repo). The AI/ML API documents "URL or Hugging
# Face owner/repo" and names no hosts; the help promises https, and a URL naming a private
# or local address (or carrying a password) is refused by `lora_path_problem`.
HF_REPO_PATTERN: Final = r"[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*"
LORA_PATH_PATTERN: Final = rf"https://\S+|{HF_REPO_PATTERN}"
LORA_PATH_HINT: Final = "an https URL or a Hugging Face repo (owner/repo)"
_LOCAL_SUFFIXES: Final = (
    ".localhost",
    ".local",
    ".internal",
    ".lan",
    ".home.arpa",
    ".localdomain",
)
# The flat options `lora_N` (path) and `lora_N_scale`, gathered into the API's `loras` list.
LORA_OPTION_NAME: Final = re.compile(r"lora_([1-9])(_scale)?")


def lora_path_problem(path: str) -> str | None:
    """Why a LoRA path (already matching LORA_PATH_PATTERN) is refused, or None."""
    if not path.startswith("https://"):
        return None  # a Hugging Face repo id
    try:
        url = urlsplit(path)
        port = url.port
    except ValueError:
        return f"must be {LORA_PATH_HINT}"
    host = (url.hostname or "").rstrip(".").lower()
    if url.username is not None or url.password is not None:
        return "must not contain a user name or password"
    if port not in (None, 443):
        return "must use the standard https port"
    try:
        ipaddress.ip_address(host)
    except ValueError:
        pass
    else:
        return "must name a public host (like huggingface.co), not an IP address"
    # A public name ends in a letters-only top-level domain: this also refuses the numeric
    # spellings of addresses ("127.1", "0x7f.0.0.1") that ip_address does not parse.
    top = host.rpartition(".")[2]
    public_tld = re.fullmatch(r"[a-z]{2,63}|xn--[a-z0-9-]{1,59}", top) is not None
    if "." not in host or not public_tld or host.endswith(_LOCAL_SUFFIXES):
        return "must name a public host (like huggingface.co)"
    return None


LORA_SCALE_MIN: Final = 0
LORA_SCALE_MAX: Final = 4


def _lora_options() -> tuple[OptionSpec, ...]:
    specs: list[OptionSpec] = []
    for n in range(1, MAX_LORAS + 1):
        specs += (
            OptionSpec(
                f"lora_{n}",
                OptionKind.TEXT,
                f"LoRA {n}: an https URL or a Hugging Face repo (owner/repo)",
                default=None,
                max_length=500,
                pattern=LORA_PATH_PATTERN,
                pattern_hint=LORA_PATH_HINT,
                check=lora_path_problem,
            ),
            OptionSpec(
                f"lora_{n}_scale",
                OptionKind.FLOAT,
                f"Strength of LoRA {n}",
                default=1.0,
                minimum=LORA_SCALE_MIN,
                maximum=LORA_SCALE_MAX,
            ),
        )
    return tuple(specs)


LORA_OPTIONS: Final = _lora_options()

# ---------------------------------------------------------------------- catalogue entries
_aiml = partial(
    Variant,
    provider="aiml",
    max_references=MAX_IMAGE_URLS,
    sizes=SIZES,
    max_prompt_chars=PROMPT_MAX_CHARS,
    min_seed=MIN_SEED,
)

# AI/ML API prices ($1 = 2,000,000 of its credits; ours are $0.01), per output image.
DEV: Final = _aiml(
    key="dev",
    label="FLUX.2 [dev]",
    description="Open-weights FLUX.2, tunable steps and guidance",
    endpoint=DEV_MODEL,
    pricing=Pricing(1.26, 1.26),
    options=DEV_OPTIONS,
)
LORA: Final = _aiml(
    key="lora",
    label="FLUX.2 [dev] + LoRA",
    description=f"FLUX.2 [dev] with up to {MAX_LORAS} LoRA adapters",
    endpoint=LORA_MODEL,
    pricing=Pricing(2.205, 2.205),
    options=DEV_OPTIONS + LORA_OPTIONS,
)
PRO: Final = _aiml(
    key="pro-aiml",
    label="FLUX.2 [pro]",
    description="Best default for generating and editing",
    endpoint=PRO_MODEL,
    pricing=Pricing(3.15, 1.575),
    options=PRO_OPTIONS,
    alias_of="pro",  # offered as `pro` when the AI/ML API is preferred or BFL is missing
)
# BFL's `max` made here when BFL cannot take it (bot/jobs/failover.py): never offered as a
# command. Priced as AI/ML prices pro, BFL's price plus 5% (BFL max: 7 and 3 a megapixel).
MAX: Final = _aiml(
    key="max-aiml",
    label="FLUX.2 [max]",
    description="Highest quality",
    endpoint=MAX_MODEL,
    max_references=0,
    pricing=Pricing(7.35, 3.15),
    options=PRO_OPTIONS,
)
