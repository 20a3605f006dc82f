"""What a catalogue entry is, and the rules every request is checked against.

A `Variant` is one model we offer: its options (`OptionSpec`), sizes (`SizeRule`), price
(`Pricing`) and reference limit; `Variant.validate` turns a member's request into
`JobParams` or raises `InvalidRequest` with the reason. The entries themselves are declared
next to their provider, in `bot/providers/bfl_options.py` and `bot/providers/aiml_options.py`,
and listed in `bot/catalogue.py`: that table is the single source for validation, the
slash-command options and cost estimates.
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

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
        return (self.api_name, (not value) if self.negate else value)

    @property
    def api_name(self) -> str:
        """The provider's field this option sets."""
        return self.api_field or self.name


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


class PromptMissing(InvalidRequest):
    """The request has no prompt, or only spaces."""

    def __init__(self) -> None:
        super().__init__("Please give a prompt describing the image.")


@dataclass(frozen=True)
class ReferenceSize:
    width: int
    height: int


@dataclass(frozen=True)
class LoraChoice:
    """The server LoRA a job uses (bot/servers/loras.py), as it was when the job was asked for: kept
    in the job's params so that a restart, another process, Reroll and Remix send the same."""

    name: str  # what members picked
    finetune_id: str
    strength: float
    endpoint: str  # the `-finetuned` endpoint of the LoRA's base model
    trigger: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "finetune_id": self.finetune_id,
            "strength": self.strength,
            "endpoint": self.endpoint,
            "trigger": self.trigger,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> LoraChoice:
        return cls(
            name=data["name"],
            finetune_id=data["finetune_id"],
            strength=float(data["strength"]),
            endpoint=data["endpoint"],
            trigger=data.get("trigger"),
        )


@dataclass(frozen=True)
class JobParams:
    """A validated request: every option present, ready to persist and to send."""

    prompt: str
    width: int | None
    height: int | None
    seed: int
    options: Mapping[str, Any]
    lora: LoraChoice | None = None
    # One line each, shown under the result: where the member's /prefer defaults gave way to
    # the server's rules (bot/members/preferences.py). Never sent to a provider.
    notes: tuple[str, ...] = ()
    # The member's default suffix is already in `prompt`: the prompt Reroll and Remix reuse
    # is final, and the suffix is never appended twice. (A mark, not the text: erasing a
    # prompt blanks `prompt` alone.)
    suffix_applied: bool = False

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "prompt": self.prompt,
            "width": self.width,
            "height": self.height,
            "seed": self.seed,
            "options": dict(self.options),
        }
        if self.lora is not None:  # absent otherwise: older rows read the same
            data["lora"] = self.lora.to_json()
        if self.notes:  # only when there are: older rows and most jobs have none
            data["notes"] = list(self.notes)
        if self.suffix_applied:
            data["suffix_applied"] = True
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> JobParams:
        lora = data.get("lora")
        return cls(
            prompt=data["prompt"],
            notes=tuple(data.get("notes") or ()),
            suffix_applied=bool(data.get("suffix_applied")),
            width=data["width"],
            height=data["height"],
            seed=data["seed"],
            options=dict(data["options"]),
            lora=LoraChoice.from_json(lora) if lora else None,
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
    # A tool (outpainting) is never offered as a command: result buttons ask for it, and it
    # is otherwise a variant like any other (jobs, ledger, /usage, recovery). It may run
    # without a prompt.
    tool: bool = False
    # Whether the provider's route takes webhook fields; without them the job is polled.
    webhooks: bool = True
    # Which server LoRAs it takes ("4b", "9b": see LORA_BASES in bfl_options.py); None: none.
    lora_size: str | None = None
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
        if not prompt and not self.tool:
            raise PromptMissing()
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


# Every provider takes the same output formats, offered the same way.
OUTPUT_FORMAT = OptionSpec(
    "output_format", OptionKind.CHOICE, "Image file format", default="jpeg", choices=OUTPUT_FORMATS
)
