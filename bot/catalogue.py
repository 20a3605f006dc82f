"""The FLUX.2 catalogue: every model we offer, and which of them this installation offers.

The entries are declared next to their provider (`bot/providers/bfl_options.py`,
`bot/providers/aiml_options.py`) with the rules of `bot/variants.py`; this table lists them
in the order the slash commands offer them. It is the single source for validation, the
slash-command options and cost estimates: declare a model in its provider's options file,
list it here, and the rest follows.
"""

from __future__ import annotations

from collections.abc import Sequence

from bot.errors import InvalidRequest
from bot.providers import aiml_options as aiml
from bot.providers import bfl_options as bfl
from bot.variants import Variant

CATALOGUE: dict[str, Variant] = {
    v.key: v
    for v in (
        bfl.PRO,
        bfl.MAX,
        bfl.FLEX,
        bfl.KLEIN_4B,
        bfl.KLEIN_9B,
        bfl.PRO_PREVIEW,
        aiml.DEV,
        aiml.LORA,
        aiml.PRO,
        bfl.KLEIN_9B_PREVIEW,
        bfl.OUTPAINT,
        aiml.MAX,
    )
}
# Only ever a backup for another provider's model (FAILOVER, bot/jobs/failover.py): jobs may
# name them, commands never offer them.
BACKUP_ONLY: frozenset[str] = frozenset({aiml.MAX.key})


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
        and not variant.tool
        and key not in BACKUP_ONLY
        and variant.provider in providers
        and (include_preview or not variant.preview)
    }
    for variant in CATALOGUE.values():
        alias = variant.alias_of
        routed = alias is not None and (prefer_aiml or alias not in offered)
        if routed and variant.provider in providers:
            offered[str(alias)] = variant
    return offered


def available_tools(providers: Sequence[str]) -> dict[str, Variant]:
    """The tool variants (never slash commands) whose provider is configured."""
    return {
        key: variant
        for key, variant in CATALOGUE.items()
        if variant.tool and variant.provider in providers
    }


def get_variant(key: str) -> Variant:
    try:
        return CATALOGUE[key]
    except KeyError:
        raise InvalidRequest(f"There is no FLUX.2 variant called “{key}”.") from None
