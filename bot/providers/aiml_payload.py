"""The AI/ML API's request body, built from a catalogue variant and validated params.

`build_payload` checks every field against the limits and option declarations of
`bot/providers/aiml_options.py`, so that a request the API would refuse is never sent (and
never billed); `payload_for` maps a catalogue variant's options onto those fields.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from bot.errors import InvalidRequest
from bot.providers.aiml_options import (
    ACCELERATION,
    DEFAULT_SIZE,
    DEV_FIELDS,
    GUIDANCE,
    HF_REPO_PATTERN,
    IMAGE_SIZE_PRESETS,
    LORA_OPTION_NAME,
    LORA_SCALE_MAX,
    LORA_SCALE_MIN,
    MAX_IMAGE_URLS,
    MAX_LORAS,
    MAX_SIDE,
    MIN_SEED,
    MIN_SIDE,
    MODELS,
    NUM_IMAGES,
    PRO_FIELDS,
    PROMPT_MAX_CHARS,
    SAFETY_TOLERANCE,
    SIDE_MULTIPLE,
    STEPS,
    TARGET_EDIT_PIXELS,
    AIMLModel,
)
from bot.providers.base import InputImage
from bot.variants import OUTPUT_FORMAT, JobParams, OptionSpec, PromptMissing, Variant

_HF_REPO = re.compile(HF_REPO_PATTERN)


@dataclass(frozen=True)
class LoRA:
    """One LoRA adapter: `path` is an http(s) URL or a Hugging Face `owner/repo`."""

    path: str
    scale: float = 1.0


def model_for(base: str, *, edit: bool) -> str:
    """The model for a catalogue endpoint: `…/flux-2` becomes `…/flux-2-edit` with images."""
    name = base.removesuffix("-edit")
    return _model(f"{name}-edit" if edit else name).name


def _model(name: str) -> AIMLModel:
    try:
        return MODELS[name]
    except KeyError:
        raise InvalidRequest(f"The AI/ML API has no model {name}.") from None


def fit_size(width: int, height: int, *, pixels: int = TARGET_EDIT_PIXELS) -> tuple[int, int]:
    """A valid `image_size` with the aspect of `width`×`height`, about `pixels` in area:
    each side 512–2048 and a multiple of 32 (extreme aspects are clamped)."""
    if width <= 0 or height <= 0:
        return DEFAULT_SIZE
    scale = (pixels / (width * height)) ** 0.5

    def side(value: float) -> int:
        rounded = round(value / SIDE_MULTIPLE) * SIDE_MULTIPLE
        return min(MAX_SIDE, max(MIN_SIDE, rounded))

    return side(width * scale), side(height * scale)


def image_data_url(image: InputImage) -> str:
    """A reference image as an `image_urls` item. The docs accept "URLs or base64 data" and
    type the items as URIs, so we send a `data:` URL (a URI that carries its type)."""
    return f"data:{image.content_type};base64,{base64.b64encode(image.data).decode('ascii')}"


def _number(name: str, value: Any, lo: float, hi: float, *, integer: bool = False) -> int | float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidRequest(f"{name} must be a number.")
    if integer and value != int(value):
        raise InvalidRequest(f"{name} must be a whole number.")
    if not lo <= value <= hi:
        raise InvalidRequest(f"{name} must be between {lo:g} and {hi:g}.")
    return int(value) if integer else value


def _check_side(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidRequest(f"The {name} must be a whole number.")
    if not MIN_SIDE <= value <= MAX_SIDE:
        raise InvalidRequest(f"The {name} must be between {MIN_SIDE} and {MAX_SIDE} pixels.")
    if value % SIDE_MULTIPLE:
        raise InvalidRequest(f"The {name} must be a multiple of {SIDE_MULTIPLE} (got {value}).")


def _check_lora(index: int, lora: LoRA) -> dict[str, Any]:
    path = lora.path.strip() if isinstance(lora.path, str) else ""
    url = urlsplit(path)
    is_url = url.scheme in ("http", "https") and bool(url.netloc)
    if not (is_url or _HF_REPO.fullmatch(path)):
        raise InvalidRequest(
            f"LoRA {index + 1} must be an http(s) URL or a Hugging Face repo (owner/repo)."
        )
    scale = _number(f"LoRA {index + 1} scale", lora.scale, LORA_SCALE_MIN, LORA_SCALE_MAX)
    return {"path": path, "scale": scale}


def build_payload(
    model: str,
    prompt: str,
    options: Mapping[str, Any] | None = None,
    image_urls: Sequence[str] = (),
    *,
    size: str | tuple[int, int] | None = None,
    seed: int | None = None,
    loras: Sequence[LoRA] = (),
) -> dict[str, Any]:
    """The exact JSON body for `model`, from plain values, checked against the documented
    rules so that a request the API would refuse is never sent (and never billed).

    `options` are API fields: `guidance_scale`, `num_inference_steps`, `acceleration`,
    `enable_prompt_expansion`, `num_images` (dev and LoRA models); `safety_tolerance` (pro:
    an int or string 1–6, always sent as the string the API wants); `output_format` and
    `enable_safety_checker` (all). `None` values are left out (the API default applies).
    Raises `InvalidRequest` (a user-safe message) for anything the model does not accept.
    """
    spec = _model(model)
    prompt = prompt.strip()
    if not prompt:
        raise PromptMissing()
    if len(prompt) > PROMPT_MAX_CHARS:
        raise InvalidRequest(
            f"The prompt is {len(prompt)} characters; the limit is {PROMPT_MAX_CHARS}."
        )
    body: dict[str, Any] = {"model": model, "prompt": prompt}

    if spec.edit:
        if not 1 <= len(image_urls) <= MAX_IMAGE_URLS:
            raise InvalidRequest(f"{model} needs 1 to {MAX_IMAGE_URLS} reference images.")
        body["image_urls"] = list(image_urls)
    elif image_urls:
        # Undocumented fields are silently ignored by the API: refuse here, or the user
        # would pay for an image that ignores the references.
        raise InvalidRequest(f"{model} does not take reference images.")

    if isinstance(size, str):
        if size not in IMAGE_SIZE_PRESETS:
            raise InvalidRequest(f"The size must be one of: {', '.join(IMAGE_SIZE_PRESETS)}.")
        body["image_size"] = size
    elif size is not None:
        width, height = size
        _check_side("width", width)
        _check_side("height", height)
        body["image_size"] = {"width": width, "height": height}

    if seed is not None:
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < MIN_SEED:
            raise InvalidRequest(f"The seed must be a whole number of at least {MIN_SEED}.")
        body["seed"] = seed

    allowed = PRO_FIELDS if spec.family == "pro" else DEV_FIELDS
    given = {name: value for name, value in (options or {}).items() if value is not None}
    unknown = sorted(set(given) - allowed)
    if unknown:
        raise InvalidRequest(f"{model} does not take {', '.join(unknown)}.")
    for name, value in given.items():
        body[name] = _checked_option(name, value)

    if loras:
        if spec.family != "lora":
            raise InvalidRequest(f"{model} does not take LoRA adapters.")
        if len(loras) > MAX_LORAS:
            raise InvalidRequest(f"At most {MAX_LORAS} LoRA adapters; you gave {len(loras)}.")
        body["loras"] = [_check_lora(index, lora) for index, lora in enumerate(loras)]
    return body


def _limits(spec: OptionSpec) -> tuple[float, float]:
    assert spec.minimum is not None and spec.maximum is not None, spec.name
    return spec.minimum, spec.maximum


def _checked_option(name: str, value: Any) -> Any:
    """One option field, checked against the option that sets it (`aiml_options`)."""
    if name == GUIDANCE.api_name:
        return _number("guidance scale", value, *_limits(GUIDANCE))
    if name == STEPS.api_name:
        return _number("steps", value, *_limits(STEPS), integer=True)
    if name == NUM_IMAGES.api_name:
        return _number("number of images", value, *_limits(NUM_IMAGES), integer=True)
    if name == SAFETY_TOLERANCE.api_name:
        # The API wants a *string* "1"–"6"; an integer is a 400.
        lowest, highest = _limits(SAFETY_TOLERANCE)
        level = value if isinstance(value, str) else str(value)
        if level not in {str(n) for n in range(int(lowest), int(highest) + 1)}:
            raise InvalidRequest(f"safety tolerance must be between {lowest:g} and {highest:g}.")
        return level
    if name in (ACCELERATION.api_name, OUTPUT_FORMAT.api_name):
        allowed = ACCELERATION.choices if name == ACCELERATION.api_name else OUTPUT_FORMAT.choices
        if value not in allowed:
            raise InvalidRequest(f"{name.replace('_', ' ')} must be one of: {', '.join(allowed)}.")
        return value
    # enable_prompt_expansion, enable_safety_checker
    if not isinstance(value, bool):
        raise InvalidRequest(f"{name.replace('_', ' ')} must be true or false.")
    return value


def payload_for(
    variant: Variant, params: JobParams, inputs: Sequence[InputImage]
) -> dict[str, Any]:
    """The body for a catalogue variant and validated params (see the proposed entries).

    The model is `variant.endpoint`, or its `-edit` twin when references are given. Each
    option goes to its `api_field` (as for BFL); the flat `lora_N` / `lora_N_scale` options
    become the `loras` list. Without an explicit size the request still names one, so the
    result is predictable: 1024×1024 for text-to-image (as on BFL), the first reference's
    aspect at ~1 MP for edits (the API's own default would be landscape 4:3 either way).
    """
    model = model_for(variant.endpoint, edit=bool(inputs))
    size: tuple[int, int]
    if params.width and params.height:
        size = (params.width, params.height)
    elif inputs:
        size = fit_size(inputs[0].width, inputs[0].height)
    else:
        size = DEFAULT_SIZE
    options: dict[str, Any] = {}
    lora_paths: dict[int, str] = {}
    lora_scales: dict[int, float] = {}
    for spec in variant.options:
        value = params.options.get(spec.name)
        if value is None:
            continue
        lora = LORA_OPTION_NAME.fullmatch(spec.name)
        if lora is not None:
            slot = int(lora.group(1))
            if lora.group(2):
                lora_scales[slot] = value
            else:
                lora_paths[slot] = value
            continue
        name, api_value = spec.to_api(value)
        options[name] = api_value
    loras = [LoRA(lora_paths[slot], lora_scales.get(slot, 1.0)) for slot in sorted(lora_paths)]
    return build_payload(
        model,
        params.prompt,
        options,
        [image_data_url(image) for image in inputs],
        size=size,
        seed=params.seed,
        loras=loras,
    )
