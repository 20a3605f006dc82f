"""What a studio allows: its limits, the checks on a `/studio start`, the theme and required
words every prompt there gets, its budget, and who may manage it. Plain values, no I/O."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from bot.errors import InvalidRequest
from bot.jobs.models import GenerationRequest
from bot.ledger import Metric, credits_to_mc, format_amount
from bot.text import one_line, truncate
from bot.variants import ReferenceSize, Variant

MAX_THEME_CHARS = 200
MAX_REQUIRED_WORDS = 10
MAX_WORD_CHARS = 40
DEFAULT_HOURS = 24.0
MIN_HOURS = 0.1  # six minutes
MAX_HOURS = 168.0  # a week, which is also Discord's longest auto-archive delay
MAX_BUDGET_CREDITS = 1_000_000.0
THREAD_NAME_CHARS = 100  # Discord's limit

LOCKED_TEXT = "This studio is locked: no new images can be made here."
ENDED_TEXT = "This studio has ended, so no new images can be made here."
NOT_A_STUDIO_TEXT = "This command works inside a studio's thread."
NOT_ALLOWED_TEXT = (
    "Only the person who started this studio or a moderator (Manage Server or Manage Threads) "
    "can {action} it."
)
ALREADY_LOCKED_TEXT = "This studio is already locked. Use `/studio end` to post its gallery."
ALREADY_ENDED_TEXT = "This studio has already ended."


class StudioState(StrEnum):
    OPEN = "open"
    LOCKED = "locked"  # no new requests; members can no longer post in the thread
    ENDED = "ended"


def budget_text(budget_mc: int) -> str:
    return format_amount(Metric.CREDITS, budget_mc)


def words_text(words: Sequence[str]) -> str:
    return ", ".join(f"**{word}**" for word in words)


class StudioBudgetExceeded(InvalidRequest):
    """The request would take the studio's thread over its budget; nothing was written."""

    def __init__(self, budget_mc: int, left_mc: int, need_mc: int) -> None:
        super().__init__(
            f"This image would go over this studio's budget of {budget_text(budget_mc)}: "
            f"{budget_text(left_mc)} left, and it needs {budget_text(need_mc)}."
        )


class RequiredWordsMissing(InvalidRequest):
    """The prompt lacks some of the words every prompt in the studio must include."""

    def __init__(self, required: Sequence[str], missing: Sequence[str]) -> None:
        super().__init__(
            f"Every prompt in this studio must include {words_text(required)}; "
            f"yours is missing {words_text(missing)}. Add "
            f"{'it' if len(missing) == 1 else 'them'} and try again."
        )


class ThemedPromptTooLong(InvalidRequest):
    """With the theme added, the prompt is longer than the model takes."""

    def __init__(self, length: int, variant: Variant) -> None:
        super().__init__(
            f"With this studio's theme added, the prompt is {length} characters; "
            f"{variant.label} accepts at most {variant.max_prompt_chars}. Shorten it by "
            f"{length - variant.max_prompt_chars}."
        )


def closed_text(state: StudioState, ends_at: float, now: float) -> str | None:
    """Why no new request is accepted in a studio, or None while it is open."""
    if state is StudioState.ENDED or ends_at <= now:
        return ENDED_TEXT
    if state is StudioState.LOCKED:
        return LOCKED_TEXT
    return None


def check_budget(budget_mc: int | None, spent_mc: int, need_mc: int) -> None:
    """Raises StudioBudgetExceeded if `need_mc` more would go over the thread's budget."""
    if budget_mc is not None and spent_mc + need_mc > budget_mc:
        raise StudioBudgetExceeded(budget_mc, max(0, budget_mc - spent_mc), need_mc)


@dataclass(frozen=True)
class Studio:
    thread_id: int
    guild_id: int
    parent_channel_id: int
    starter_id: int
    theme: str
    required_words: tuple[str, ...]
    ends_at: float
    budget_mc: int | None  # None: only the server's allowances apply
    state: StudioState
    created_at: float
    gallery_message_id: int | None = None  # in the parent channel; 0: could not be posted
    thread_gallery_message_id: int | None = None  # in the thread; 0: could not be posted
    finished_at: float | None = None  # every ending step done

    @property
    def suffix(self) -> str:
        return f", {self.theme}"

    def without_theme(self, prompt: str) -> str:
        """The member's own words: a stored prompt (Reroll, Remix) already has the theme."""
        prompt = prompt.strip()
        if prompt.casefold().endswith(self.suffix.casefold()):
            return prompt[: -len(self.suffix)].rstrip()
        return prompt

    def missing_words(self, prompt: str) -> list[str]:
        return [word for word in self.required_words if not _contains(prompt, word)]

    def themed(self, prompt: str, variant: Variant) -> str:
        """The prompt to send: the member's words with the theme, once they pass the rules.
        Raises InvalidRequest."""
        own = self.without_theme(prompt)
        if not own:
            return own  # the variant asks for a prompt, as anywhere else
        missing = self.missing_words(own)
        if missing:
            raise RequiredWordsMissing(self.required_words, missing)
        themed = own + self.suffix
        if len(themed) > variant.max_prompt_chars:
            raise ThemedPromptTooLong(len(themed), variant)
        return themed

    def may_manage(self, user_id: int, *, is_moderator: bool) -> bool:
        return is_moderator or user_id == self.starter_id

    def is_due(self, now: float) -> bool:
        return self.state is not StudioState.ENDED and self.ends_at <= now

    @property
    def needs_finishing(self) -> bool:
        return self.state is StudioState.ENDED and self.finished_at is None

    def closed_text(self, now: float) -> str | None:
        """Why no new request is accepted here, or None while it is open."""
        return closed_text(self.state, self.ends_at, now)


def _contains(prompt: str, word: str) -> bool:
    """Whole words, case-insensitive: "cat" is not found in "category". Phrases match with
    any spacing between their words."""
    pattern = r"\s+".join(re.escape(part) for part in word.split())
    return re.search(rf"(?<!\w){pattern}(?!\w)", prompt, re.IGNORECASE) is not None


def parse_words(text: str | None) -> tuple[str, ...]:
    """Comma-separated required words, trimmed, without blanks or repeats (any case)."""
    words: list[str] = []
    for raw in (text or "").split(","):
        word = one_line(raw)
        if word and word.casefold() not in {w.casefold() for w in words}:
            words.append(word)
    return tuple(words)


@dataclass(frozen=True)
class StudioPlan:
    """A validated `/studio start`, before its thread exists."""

    theme: str
    required_words: tuple[str, ...]
    hours: float
    budget_mc: int | None

    @property
    def thread_name(self) -> str:
        return truncate(f"🎨 {self.theme}", THREAD_NAME_CHARS)


def make_plan(
    theme: str, required_words: str | None, hours: float, budget_credits: float | None
) -> StudioPlan:
    """Check what was typed; raises InvalidRequest with what to change."""
    theme = one_line(theme)
    if not theme:
        raise InvalidRequest("Give the studio a theme, e.g. “watercolour, soft morning light”.")
    if len(theme) > MAX_THEME_CHARS:
        raise InvalidRequest(f"A studio's theme can be at most {MAX_THEME_CHARS} characters.")
    words = parse_words(required_words)
    if len(words) > MAX_REQUIRED_WORDS:
        raise InvalidRequest(f"A studio can require at most {MAX_REQUIRED_WORDS} words.")
    long = [w for w in words if len(w) > MAX_WORD_CHARS]
    if long:
        raise InvalidRequest(
            f"Required words can be at most {MAX_WORD_CHARS} characters (“{long[0][:60]}”)."
        )
    if not MIN_HOURS <= hours <= MAX_HOURS:
        raise InvalidRequest(
            f"A studio lasts between {MIN_HOURS:g} and {MAX_HOURS:g} hours (a week)."
        )
    budget_mc = None
    if budget_credits is not None:
        budget_mc = credits_to_mc(budget_credits)
        if budget_mc <= 0 or budget_credits > MAX_BUDGET_CREDITS:
            raise InvalidRequest(
                f"A studio's budget is between 0.001 and {MAX_BUDGET_CREDITS:,.0f} credits; "
                "leave it empty for no budget of its own."
            )
    return StudioPlan(theme, words, hours, budget_mc)


def estimate_mc(request: GenerationRequest) -> int:
    """The request's estimated cost, as the engine reserves it (a batch: each of its jobs)."""
    references = [ReferenceSize(image.width, image.height) for image in request.inputs]
    one = credits_to_mc(request.variant.estimate_cost(request.params, references))
    return one * request.batch_size


def reply_is_request(
    *, mentioned: bool, open_studio: bool, has_words: bool, to_images: bool
) -> bool:
    """Whether a reply asks for an image: when it mentions the bot in its text, anywhere; in
    an open studio's thread, also when it has words and replies to an image (chatting there
    is not a request, and a reply's ping alone never is)."""
    return mentioned or (open_studio and has_words and to_images)
