"""Slash-command options generated from the variant catalogue.

discord.py reads a command's options from its callback's signature; for commands whose
options come from data (one `/flux` subcommand per variant), we build that signature.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Any, Optional

import discord
from discord import app_commands

from bot.variants import SEED_MAX, OptionKind, OptionSpec, Variant

IMAGE_OPTION = "image"
LORA_OPTION_TEXT = "A LoRA from this server's catalogue (pick one as you type)"
MAX_DIMENSION = 4096
Handler = Callable[[discord.Interaction[Any], dict[str, Any]], Awaitable[None]]


def image_option_names(count: int) -> list[str]:
    """image, image2, image3, …"""
    return [IMAGE_OPTION if n == 0 else f"{IMAGE_OPTION}{n + 1}" for n in range(count)]


def size_choices(presets: dict[str, tuple[int, int]]) -> list[app_commands.Choice[str]]:
    return [
        app_commands.Choice(name=f"{name.replace('_', ' ')} ({w}×{h})", value=name)
        for name, (w, h) in presets.items()
    ]


class OptionSet:
    """Collects parameters, descriptions and choices for one command."""

    def __init__(self) -> None:
        self.parameters: list[inspect.Parameter] = []
        self.descriptions: dict[str, str] = {}
        self.choices: dict[str, list[app_commands.Choice[Any]]] = {}

    def add(
        self,
        name: str,
        annotation: Any,
        description: str,
        *,
        required: bool = False,
        choices: list[app_commands.Choice[Any]] | None = None,
    ) -> None:
        self.parameters.append(
            inspect.Parameter(
                name,
                inspect.Parameter.KEYWORD_ONLY,
                annotation=annotation if required else Optional[annotation],  # noqa: UP045
                default=inspect.Parameter.empty if required else None,
            )
        )
        self.descriptions[name] = description[:100]
        if choices:
            self.choices[name] = choices

    def add_spec(self, spec: OptionSpec) -> None:
        annotation: Any
        choices = None
        if spec.kind is OptionKind.INT:
            annotation = app_commands.Range[int, int(spec.minimum or 0), int(spec.maximum or 0)]
        elif spec.kind is OptionKind.FLOAT:
            annotation = app_commands.Range[
                float, float(spec.minimum or 0), float(spec.maximum or 0)
            ]
        elif spec.kind is OptionKind.BOOL:
            annotation = bool
        elif spec.kind is OptionKind.TEXT:
            annotation = app_commands.Range[str, 1, spec.max_length]
        else:
            annotation = str
            choices = [app_commands.Choice(name=c, value=c) for c in spec.choices]
        description = f"{spec.description} (default {_default_text(spec)})"
        self.add(spec.name, annotation, description, choices=choices)

    def add_size(self, variant: Variant | None, presets: dict[str, tuple[int, int]]) -> None:
        self.add("size", str, "Image size preset", choices=size_choices(presets))
        low = variant.sizes.min_side if variant else 64
        high = (variant.sizes.max_side if variant else None) or MAX_DIMENSION
        step = variant.sizes.multiple if variant else 16
        self.add(
            "width", app_commands.Range[int, low, high], f"Width in pixels (multiple of {step})"
        )
        self.add(
            "height", app_commands.Range[int, low, high], f"Height in pixels (multiple of {step})"
        )

    def add_seed(self, minimum: int = 0) -> None:
        self.add(
            "seed", app_commands.Range[int, minimum, SEED_MAX], "Seed for a reproducible image"
        )

    def add_images(self, count: int, *, first_required: bool = False) -> None:
        for index, name in enumerate(image_option_names(count)):
            label = "Reference image" if index == 0 else f"Reference image {index + 1}"
            self.add(
                name,
                discord.Attachment,
                f"{label} (PNG, JPEG or WebP)",
                required=first_required and index == 0,
            )

    def command(
        self, name: str, description: str, handler: Handler
    ) -> app_commands.Command[Any, Any, None]:
        async def callback(interaction: discord.Interaction[Any], /, **values: Any) -> None:
            await handler(interaction, values)

        interaction_param = inspect.Parameter(
            "interaction", inspect.Parameter.POSITIONAL_ONLY, annotation=discord.Interaction
        )
        ordered = sorted(self.parameters, key=lambda p: p.default is not inspect.Parameter.empty)
        callback.__signature__ = inspect.Signature([interaction_param, *ordered])  # type: ignore[attr-defined]
        callback.__discord_app_commands_param_description__ = dict(self.descriptions)  # type: ignore[attr-defined]
        callback.__discord_app_commands_param_choices__ = dict(self.choices)  # type: ignore[attr-defined]
        return app_commands.Command(name=name, description=description[:100], callback=callback)


def _default_text(spec: OptionSpec) -> str:
    if spec.kind is OptionKind.BOOL:
        return "on" if spec.default else "off"
    if spec.default is None:
        return "none"
    return f"{spec.default:g}" if isinstance(spec.default, float) else str(spec.default)


def variant_command(
    name: str, variant: Variant, handler: Handler
) -> app_commands.Command[Any, Any, None]:
    """`/flux <name>`: exactly this variant's options, and as many image slots as it takes."""
    options = OptionSet()
    options.add(
        "prompt",
        app_commands.Range[str, 1, variant.max_prompt_chars],
        "What the image should show (or how to change the references)",
        required=True,
    )
    options.add_size(variant, variant.size_presets())
    options.add_seed(variant.min_seed)
    for spec in variant.options:
        options.add_spec(spec)
    if variant.lora_size is not None:  # suggested by autocomplete (cogs/loras.py)
        options.add("lora", app_commands.Range[str, 1, 100], LORA_OPTION_TEXT)
    options.add_images(variant.max_references)
    return options.command(name, f"{variant.label}: {variant.description}", handler)
