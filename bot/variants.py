"""The FLUX.2 catalogue as data.

One `Variant` per model we offer. This table is the single source for validation, the
slash-command options and cost estimates: add a model here and the rest follows.
"""

from __future__ import annotations

import ipaddress
import math
import random
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any
from urllib.parse import urlsplit

from bot.errors import InvalidRequest

MEGAPIXEL = 1024 * 1024
SEED_MAX = 2**32 - 1
OUTPUT_FORMATS = ("jpeg", "png", "webp")


class OptionKind(StrEnum):
    INT = "int"
    FLOAT = "float"
    BOOL = "bool"
    CHOICE = "choice"
    TEXT = "text"  # a short string, optionally matching `pattern` (e.g. a LoRA path)


@dataclass(frozen=True)
class OptionSpec:
    """A variant-specific option, as the user sees it and as the provider receives it."""

    name: str
    kind: OptionKind
    description: str
    default: Any
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] = ()
    api_field: str | None = None
    negate: bool = False  # e.g. our `prompt_upsampling=True` is BFL's `disable_pup=False`
    max_length: int = 500  # TEXT only
    pattern: str | None = None  # TEXT only: the whole value must match (re.fullmatch)
    pattern_hint: str = ""  # TEXT only: what `pattern` means, for the refusal
    # TEXT only, after `pattern`: returns why the value is refused, or None to accept it.
    check: Callable[[str], str | None] | None = field(default=None, compare=False)

    def coerce(self, value: Any) -> Any:
        label = self.name.replace("_", " ")
        if self.kind is OptionKind.BOOL:
            if not isinstance(value, bool):
                raise InvalidRequest(f"{label} must be true or false.")
            return value
        if self.kind is OptionKind.CHOICE:
            if value not in self.choices:
                raise InvalidRequest(f"{label} must be one of: {', '.join(self.choices)}.")
            return value
        if self.kind is OptionKind.TEXT:
            if not isinstance(value, str) or not value.strip():
                raise InvalidRequest(f"{label} must be some text.")
            text = value.strip()
            if len(text) > self.max_length:
                raise InvalidRequest(f"{label} must be at most {self.max_length} characters.")
            if self.pattern is not None and not re.fullmatch(self.pattern, text):
                raise InvalidRequest(f"{label} must be {self.pattern_hint or 'well-formed'}.")
            problem = self.check(text) if self.check is not None else None
            if problem is not None:
                raise InvalidRequest(f"{label} {problem}.")
            return text
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise InvalidRequest(f"{label} must be a number.")
        if self.kind is OptionKind.INT and value != int(value):
            raise InvalidRequest(f"{label} must be a whole number.")
        number: int | float = int(value) if self.kind is OptionKind.INT else float(value)
        if (self.minimum is not None and number < self.minimum) or (
            self.maximum is not None and number > self.maximum
        ):
            raise InvalidRequest(
                f"{label} must be between {_fmt(self.minimum)} and {_fmt(self.maximum)}."
            )
        return number

    def to_api(self, value: Any) -> tuple[str, Any]:
        return (self.api_field or self.name, (not value) if self.negate else value)


def _fmt(number: float | None) -> str:
    return "?" if number is None else f"{number:g}"


@dataclass(frozen=True)
class SizeRule:
    min_side: int
    max_side: int | None
    multiple: int
    max_pixels: int

    def check(self, width: int, height: int) -> None:
        for label, side in (("width", width), ("height", height)):
            if side < self.min_side or (self.max_side is not None and side > self.max_side):
                upper = f" and at most {self.max_side}" if self.max_side else ""
                raise InvalidRequest(f"The {label} must be at least {self.min_side}{upper} pixels.")
            if side % self.multiple:
                raise InvalidRequest(
                    f"The {label} must be a multiple of {self.multiple} (got {side})."
                )
        if width * height > self.max_pixels:
            raise InvalidRequest(
                f"{width}×{height} is {width * height / MEGAPIXEL:.2f} MP; the limit is "
                f"{self.max_pixels / MEGAPIXEL:g} MP."
            )


BFL_SIZES = SizeRule(min_side=64, max_side=None, multiple=16, max_pixels=4 * MEGAPIXEL)
# The AI/ML API's FLUX.2 models: each side 512–2048 and a multiple of 32.
AIML_SIZES = SizeRule(min_side=512, max_side=2048, multiple=32, max_pixels=2048 * 2048)

# Presets offered as choices; each variant shows the ones its size rule accepts.
SIZE_PRESETS: dict[str, tuple[int, int]] = {
    "square_1mp": (1024, 1024),
    "square_2mp": (1440, 1440),
    "landscape_4_3": (1152, 864),
    "portrait_3_4": (864, 1152),
    "landscape_16_9": (1360, 768),
    "portrait_9_16": (768, 1360),
    "wide_2mp": (1920, 1088),
    "tall_2mp": (1088, 1920),
}

DEFAULT_OUTPUT_SIZE = (1024, 1024)  # what the API produces when no size and no reference


@dataclass(frozen=True)
class Pricing:
    """Credits (1 credit = $0.01): first output MP, then a rate per extra output or input MP."""

    first_mp: float
    per_extra_mp: float

    def estimate(self, output_pixels: int, input_pixels: Sequence[int]) -> float:
        output_mp = output_pixels / MEGAPIXEL
        input_mp = sum(input_pixels) / MEGAPIXEL
        extra = max(0.0, output_mp - 1.0) + input_mp
        return round(self.first_mp + extra * self.per_extra_mp, 2)


@dataclass(frozen=True)
class ReferenceSize:
    width: int
    height: int


@dataclass(frozen=True)
class JobParams:
    """A validated request: every option present, ready to persist and to send."""

    prompt: str
    width: int | None
    height: int | None
    seed: int
    options: Mapping[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {
            "prompt": self.prompt,
            "width": self.width,
            "height": self.height,
            "seed": self.seed,
            "options": dict(self.options),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> JobParams:
        return cls(
            prompt=data["prompt"],
            width=data["width"],
            height=data["height"],
            seed=data["seed"],
            options=dict(data["options"]),
        )


@dataclass(frozen=True)
class Variant:
    key: str
    label: str
    description: str
    provider: str
    endpoint: str
    max_references: int
    sizes: SizeRule
    pricing: Pricing
    options: tuple[OptionSpec, ...]
    preview: bool = False
    max_prompt_chars: int = 4000
    min_seed: int = 0  # the AI/ML API wants seed >= 1
    alias_of: str | None = None  # offered under this key when routed to (e.g. "pro")
    edit_capable: bool = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "edit_capable", self.max_references > 0)

    def option(self, name: str) -> OptionSpec:
        for spec in self.options:
            if spec.name == name:
                return spec
        raise KeyError(name)

    def check_reference_count(self, count: int) -> None:
        """Too many references is an error naming the limit, never a silent truncation."""
        if count > self.max_references:
            if self.max_references == 0:
                raise InvalidRequest(f"{self.label} does not take reference images.")
            raise InvalidRequest(
                f"{self.label} accepts at most {self.max_references} reference images; "
                f"you gave {count}."
            )

    def size_presets(self) -> dict[str, tuple[int, int]]:
        presets = {}
        for name, (width, height) in SIZE_PRESETS.items():
            try:
                self.sizes.check(width, height)
            except InvalidRequest:
                continue
            presets[name] = (width, height)
        return presets

    def validate(
        self,
        prompt: str,
        *,
        options: Mapping[str, Any] | None = None,
        width: int | None = None,
        height: int | None = None,
        size_preset: str | None = None,
        seed: int | None = None,
        references: Sequence[ReferenceSize] = (),
        rng: random.Random | None = None,
    ) -> JobParams:
        """Check a request against this variant's rules; raise InvalidRequest with the reason."""
        prompt = prompt.strip()
        if not prompt:
            raise InvalidRequest("Please give a prompt describing the image.")
        if len(prompt) > self.max_prompt_chars:
            raise InvalidRequest(
                f"The prompt is {len(prompt)} characters; {self.label} accepts at most "
                f"{self.max_prompt_chars}."
            )
        if size_preset is not None:
            if width is not None or height is not None:
                raise InvalidRequest("Choose either a size preset or a width and height, not both.")
            presets = self.size_presets()
            if size_preset not in presets:
                raise InvalidRequest(f"{self.label} has no size called “{size_preset}”.")
            width, height = presets[size_preset]
        if (width is None) != (height is None):
            raise InvalidRequest("Give both a width and a height, or neither.")
        if width is not None and height is not None:
            self.sizes.check(width, height)
        self.check_reference_count(len(references))
        if seed is not None and not self.min_seed <= seed <= SEED_MAX:
            raise InvalidRequest(f"The seed must be between {self.min_seed} and {SEED_MAX}.")
        given = dict(options or {})
        unknown = sorted(set(given) - {spec.name for spec in self.options})
        if unknown:
            raise InvalidRequest(f"{self.label} has no option {', '.join(unknown)}.")
        resolved = {
            spec.name: spec.coerce(given[spec.name])
            if given.get(spec.name) is not None
            else spec.default
            for spec in self.options
        }
        if seed is None:
            seed = (rng or random.SystemRandom()).randint(self.min_seed, SEED_MAX)
        return JobParams(prompt=prompt, width=width, height=height, seed=seed, options=resolved)

    def output_size(
        self, params: JobParams, references: Sequence[ReferenceSize]
    ) -> tuple[int, int]:
        """The size we expect back: the requested one, else the first reference's, else 1 MP."""
        if params.width and params.height:
            return params.width, params.height
        if references:
            first = references[0]
            scale = min(1.0, math.sqrt(self.sizes.max_pixels / (first.width * first.height)))
            return int(first.width * scale), int(first.height * scale)
        return DEFAULT_OUTPUT_SIZE

    def image_count(self, params: JobParams) -> int:
        """How many images the request can produce: what it reserves and may be charged."""
        return max(1, int(params.options.get("num_images") or 1))

    def estimate_cost(self, params: JobParams, references: Sequence[ReferenceSize]) -> float:
        width, height = self.output_size(params, references)
        first = self.pricing.estimate(width * height, [r.width * r.height for r in references])
        # Each further image of a multi-image request costs its output again (not the inputs).
        extra_images = self.image_count(params) - 1
        return round(first + extra_images * self.pricing.estimate(width * height, []), 2)


def _common_bfl_options() -> tuple[OptionSpec, ...]:
    return (
        OptionSpec(
            "safety_tolerance",
            OptionKind.INT,
            "Moderation strictness: 0 strictest, 5 most lenient",
            default=2,
            minimum=0,
            maximum=5,
        ),
        OptionSpec(
            "output_format",
            OptionKind.CHOICE,
            "Image file format",
            default="jpeg",
            choices=OUTPUT_FORMATS,
        ),
    )


_PUP = OptionSpec(
    "prompt_upsampling",
    OptionKind.BOOL,
    "Let the model expand your prompt",
    default=True,
    api_field="disable_pup",
    negate=True,
)


def _bfl(
    key: str,
    label: str,
    description: str,
    endpoint: str,
    max_refs: int,
    pricing: Pricing,
    extra: tuple[OptionSpec, ...] = (),
    preview: bool = False,
) -> Variant:
    return Variant(
        key=key,
        label=label,
        description=description,
        provider="bfl",
        endpoint=endpoint,
        max_references=max_refs,
        sizes=BFL_SIZES,
        pricing=pricing,
        options=extra + _common_bfl_options(),
        preview=preview,
    )


_PRO_PRICING = Pricing(first_mp=3.0, per_extra_mp=1.5)

AIML_DEV = "blackforestlabs/flux-2"  # "-edit" is appended when references are given
AIML_LORA = "blackforestlabs/flux-2-lora"
AIML_PRO = "blackforestlabs/flux-2-pro"
# An https URL or a Hugging Face repo id (owner/repo). The AI/ML API documents "URL or Hugging
# Face owner/repo" and names no hosts; the help promises https, and a URL naming a private
# or local address (or carrying a password) is refused by `lora_path_problem`.
LORA_PATH_PATTERN = r"https://\S+|[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*"
LORA_PATH_HINT = "an https URL or a Hugging Face repo (owner/repo)"
_LOCAL_SUFFIXES = (".localhost", ".local", ".internal", ".lan", ".home.arpa", ".localdomain")


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


_FORMATS = OptionSpec(
    "output_format", OptionKind.CHOICE, "Image file format", default="jpeg", choices=OUTPUT_FORMATS
)


def _aiml_dev_options() -> tuple[OptionSpec, ...]:
    return (
        OptionSpec(
            "guidance",
            OptionKind.FLOAT,
            "How closely to follow the prompt",
            default=2.5,
            minimum=0,
            maximum=20,
            api_field="guidance_scale",
        ),
        OptionSpec(
            "steps",
            OptionKind.INT,
            "Sampling steps (more is slower, finer)",
            default=28,
            minimum=4,
            maximum=50,
            api_field="num_inference_steps",
        ),
        OptionSpec(
            "acceleration",
            OptionKind.CHOICE,
            "Faster generation at some cost in quality",
            default="regular",
            choices=("none", "regular", "high"),
        ),
        OptionSpec(
            "prompt_upsampling",
            OptionKind.BOOL,
            "Let the model expand your prompt",
            default=False,
            api_field="enable_prompt_expansion",
        ),
        OptionSpec(
            "num_images",
            OptionKind.INT,
            "How many images to make (posted together)",
            default=1,
            minimum=1,
            maximum=4,
        ),
        _FORMATS,
    )


def _lora_options() -> tuple[OptionSpec, ...]:
    specs: list[OptionSpec] = []
    for n in (1, 2, 3):
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
                minimum=0,
                maximum=4,
            ),
        )
    return tuple(specs)


def _aiml(
    key: str,
    label: str,
    description: str,
    endpoint: str,
    pricing: Pricing,
    options: tuple[OptionSpec, ...],
    alias_of: str | None = None,
) -> Variant:
    return Variant(
        key=key,
        label=label,
        description=description,
        provider="aiml",
        endpoint=endpoint,
        max_references=3,
        sizes=AIML_SIZES,
        pricing=pricing,
        options=options,
        min_seed=1,
        alias_of=alias_of,
    )


_KLEIN_9B_PRICING = Pricing(first_mp=1.5, per_extra_mp=0.2)

CATALOGUE: dict[str, Variant] = {
    v.key: v
    for v in (
        _bfl(
            "pro",
            "FLUX.2 [pro]",
            "Best default for generating and editing",
            "/v1/flux-2-pro",
            8,
            _PRO_PRICING,
            (_PUP,),
        ),
        _bfl(
            "max",
            "FLUX.2 [max]",
            "Highest quality, with grounded web search",
            "/v1/flux-2-max",
            8,
            Pricing(7.0, 3.0),
            (_PUP,),
        ),
        _bfl(
            "flex",
            "FLUX.2 [flex]",
            "Tunable steps and guidance, strong typography",
            "/v1/flux-2-flex",
            8,
            Pricing(5.0, 5.0),
            (
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
            ),
        ),
        _bfl(
            "klein-4b",
            "FLUX.2 [klein] 4B",
            "Fastest and cheapest",
            "/v1/flux-2-klein-4b",
            4,
            Pricing(1.4, 0.1),
        ),
        _bfl(
            "klein-9b",
            "FLUX.2 [klein] 9B",
            "Fast, better quality than 4B",
            "/v1/flux-2-klein-9b",
            4,
            _KLEIN_9B_PRICING,
        ),
        _bfl(
            "pro-preview",
            "FLUX.2 [pro] preview",
            "Pro with the latest improvements first",
            "/v1/flux-2-pro-preview",
            8,
            _PRO_PRICING,
            (_PUP,),
            preview=True,
        ),
        # AI/ML API prices ($1 = 2,000,000 of its credits; ours are $0.01), per output image.
        _aiml(
            "dev",
            "FLUX.2 [dev]",
            "Open-weights FLUX.2, tunable steps and guidance",
            AIML_DEV,
            Pricing(1.26, 1.26),
            _aiml_dev_options(),
        ),
        _aiml(
            "lora",
            "FLUX.2 [dev] + LoRA",
            "FLUX.2 [dev] with up to 3 LoRA adapters",
            AIML_LORA,
            Pricing(2.205, 2.205),
            _aiml_dev_options() + _lora_options(),
        ),
        _aiml(
            "pro-aiml",
            "FLUX.2 [pro]",
            "Best default for generating and editing",
            AIML_PRO,
            Pricing(3.15, 1.575),
            (
                OptionSpec(
                    "safety_tolerance",
                    OptionKind.INT,
                    "Moderation strictness: 1 strictest, 6 most lenient",
                    default=2,
                    minimum=1,
                    maximum=6,
                ),
                _FORMATS,
            ),
            alias_of="pro",
        ),
        _bfl(
            "klein-9b-preview",
            "FLUX.2 [klein] 9B preview",
            "Klein 9B with the latest improvements first",
            "/v1/flux-2-klein-9b-preview",
            4,
            _KLEIN_9B_PRICING,
            preview=True,
        ),
    )
}


def available_variants(
    *, include_preview: bool, providers: Sequence[str], prefer_aiml: bool = False
) -> dict[str, Variant]:
    """The variants this installation offers, given its settings and configured providers.
    An alias (`pro-aiml`) is offered under its alias key (`pro`) when its provider is
    preferred or the original's provider is not configured."""
    offered = {
        key: variant
        for key, variant in CATALOGUE.items()
        if variant.alias_of is None
        and variant.provider in providers
        and (include_preview or not variant.preview)
    }
    for variant in CATALOGUE.values():
        alias = variant.alias_of
        routed = alias is not None and (prefer_aiml or alias not in offered)
        if routed and variant.provider in providers:
            offered[str(alias)] = variant
    return offered


def get_variant(key: str) -> Variant:
    try:
        return CATALOGUE[key]
    except KeyError:
        raise InvalidRequest(f"There is no FLUX.2 variant called “{key}”.") from None
