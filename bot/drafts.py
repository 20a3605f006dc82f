"""A member's request on its way to becoming a job: as typed (`Draft`, and the parsers of a
form's plain values), checked (`Checked`, what `GenerationService.prepare` takes) and what
became of it (`Held` for review, or `Submitted` as a job). See bot/generation.py."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from bot.community.policy import Requester
from bot.errors import InvalidRequest
from bot.jobs.models import Job
from bot.references import ReferenceCandidate
from bot.variants import JobParams, LoraChoice, ReferenceSize, Variant

if TYPE_CHECKING:
    from bot.community.approvals import Approval


@dataclass(frozen=True)
class StoredReferences:
    """A stored job's reference images, described but not loaded: Reroll and Remix reuse
    them, and the images themselves are read only once every check has passed."""

    job_id: str
    sizes: tuple[ReferenceSize, ...]


@dataclass(frozen=True)
class Draft:
    """A request as typed, before validation. `variant` None means the server's default."""

    prompt: str
    variant: str | None = None
    options: Mapping[str, Any] = field(default_factory=dict)
    size_preset: str | None = None
    width: int | None = None
    height: int | None = None
    seed: int | None = None
    # The member's /prefer defaults fill what the command left out (bot/members): not for
    # Reroll and Remix, whose prompt and choices come from a job that already had them.
    use_preferences: bool = True
    references: Sequence[ReferenceCandidate] = ()
    # A stored job's references (Reroll, Remix), loaded after the checks.
    stored: StoredReferences | None = None
    parent_job_id: str | None = None
    needs_edit: bool = False  # only edit-capable variants qualify
    # The (single) reference is sent resized to this size: a canvas tool scaled its
    # composition down to fit the megapixel limits (bot/tools/canvas.py).
    fit_input: tuple[int, int] | None = None
    # A server LoRA (bot/servers/loras.py): its name as typed, or a stored job's (Reroll, Remix).
    lora: str | LoraChoice | None = None
    # Several images per prompt (BFL variants): this many jobs, one seed each.
    images: int = 1


@dataclass(frozen=True)
class Checked:
    """A draft that passed every check needing no download (`precheck`): what `prepare`
    takes, so that nothing is checked twice."""

    draft: Draft
    requester: Requester
    variant: Variant
    params: JobParams
    # The reference sizes the allowance and budgets were checked with (those Discord reported).
    counted: tuple[ReferenceSize, ...]


@dataclass(frozen=True)
class Held:
    """The request waits for a moderator: nothing is reserved or sent until one approves."""

    approval: Approval


@dataclass(frozen=True)
class Submitted:
    """The request is a job now, and runs; `position` is its place in line."""

    job: Job
    position: int | None


def parse_size(text: str) -> tuple[int | None, int | None]:
    """ "WIDTHxHEIGHT" as typed in a form (× and spaces allowed); empty: automatic."""
    text = text.strip().lower().replace("×", "x").replace(" ", "")
    if not text:
        return None, None
    match = re.fullmatch(r"([0-9]{2,5})x([0-9]{2,5})", text)
    if match is None:
        raise InvalidRequest("Write the size as WIDTHxHEIGHT, for example 1024x768.")
    return int(match[1]), int(match[2])


def parse_seed(text: str) -> int | None:
    """A seed as typed in a form; empty: a new one."""
    text = text.strip()
    if not text:
        return None
    # Only ASCII digits: str.isdigit also accepts "²" or "①", which int() refuses.
    if not re.fullmatch(r"[0-9]+", text):
        raise InvalidRequest("The seed must be a whole number, or empty for a new one.")
    return int(text)
