"""Studio rules without Discord: plans, prompts, the atomic thread budget, resumable endings
and the contact sheet."""

from __future__ import annotations

import asyncio
import io
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import pytest
from PIL import Image

from bot.catalogue import get_variant
from bot.community.studios import (
    ENDED_TEXT,
    LOCKED_TEXT,
    SHEET_GAP,
    SHEET_PLACEHOLDER,
    SHEET_TILE,
    GalleryItem,
    Studio,
    StudioBudgetExceeded,
    StudioPlan,
    Studios,
    StudioState,
    contact_sheet,
    make_plan,
    parse_words,
)
from bot.errors import InvalidRequest
from bot.jobs.models import JobState
from bot.jobs.store import JobStore
from bot.ledger import Ledger, QuotaPolicy
from bot.providers.base import OutputImage
from bot.servers.audit import AuditLog
from bot.storage.db import Database
from cogs.studio import gallery_text
from tests.conftest import make_request

THREAD = 4242  # make_request's channel
GUILD = 42


def png(colour: tuple[int, int, int], size: tuple[int, int] = (64, 48)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, "PNG")
    return buffer.getvalue()


async def open_studio(
    db: Database, *, words: str | None = None, budget: float | None = None, hours: float = 1
) -> Studios:
    studios = Studios(db, AuditLog(db, audit_channel=lambda guild: None))
    await studios.load()
    await studios.start(
        make_plan("oil painting", words, hours, budget),
        thread_id=THREAD,
        guild_id=GUILD,
        parent_channel_id=7,
        starter_id=1,
    )
    return studios


# --------------------------------------------------------------------------- plans
def test_a_plan_trims_and_checks_what_was_typed() -> None:
    plan = make_plan("  oil   painting ", " fox, , Fox ,moon light,", 24, 2.5)
    assert plan == StudioPlan("oil painting", ("fox", "moon light"), 24, 2500)
    assert plan.thread_name == "🎨 oil painting"
    assert len(make_plan("x" * 200, None, 1, None).thread_name) == 100
    assert parse_words(None) == ()
    for theme, words, hours, budget, message in [
        ("   ", None, 1, None, "Give the studio a theme"),
        ("x" * 201, None, 1, None, "at most 200 characters"),
        ("t", ",".join(f"w{n}" for n in range(11)), 1, None, "at most 10 words"),
        ("t", "y" * 41, 1, None, "at most 40 characters"),
        ("t", None, 169, None, "between 0.1 and 168 hours"),
        ("t", None, 0.05, None, "between 0.1 and 168 hours"),
        ("t", None, 1, 0.0001, "budget is between"),
    ]:
        with pytest.raises(InvalidRequest, match=message):
            make_plan(theme, words, hours, budget)


# --------------------------------------------------------------------------- prompts
async def test_prompts_get_the_theme_once_and_need_every_required_word(db: Database) -> None:
    studios = await open_studio(db, words="Fox, moon light")
    pro = get_variant("pro")
    assert studios.apply(99, "anything", pro) == "anything"  # not a studio
    assert studios.apply(THREAD, " a FOX in moon  light ", pro) == (
        "a FOX in moon  light, oil painting"
    )
    stored = "a fox in moon light, oil painting"  # Reroll and Remix reuse stored prompts
    assert studios.apply(THREAD, stored, pro) == stored
    assert studios.apply(THREAD, "  ", pro) == ""  # the variant asks for a prompt
    with pytest.raises(InvalidRequest, match=r"yours is missing \*\*Fox\*\*, \*\*moon light\*\*"):
        studios.apply(THREAD, "foxes in moonlight", pro)  # whole words only
    suffix = len(", oil painting")
    longest = "fox moon light " + "x" * (pro.max_prompt_chars - suffix - 15)
    assert len(studios.apply(THREAD, longest, pro)) == pro.max_prompt_chars
    with pytest.raises(InvalidRequest, match=r"4003 characters.*Shorten it by 3"):
        studios.apply(THREAD, longest + "xxx", pro)
    assert studios.accepts_replies(THREAD) and not studios.accepts_replies(99)

    studios.clock = lambda: time.time() + 7200  # past its end, before the sweep noticed
    with pytest.raises(InvalidRequest, match=ENDED_TEXT):
        studios.apply(THREAD, "fox moon light", pro)
    assert not studios.accepts_replies(THREAD)


async def test_a_locked_studio_refuses_even_a_request_validated_before(db: Database) -> None:
    studios = await open_studio(db)
    store = JobStore(db, time.time, ledger=Ledger(db, QuotaPolicy.unlimited()))
    request = studios.bind(make_request("a pear, oil painting"))
    await studios.lock(THREAD, 1, is_moderator=False)
    with pytest.raises(InvalidRequest, match=LOCKED_TEXT):
        studios.apply(THREAD, "a pear", get_variant("pro"))
    with pytest.raises(InvalidRequest, match=LOCKED_TEXT):
        await store.create(request, estimated_cost=3.0)
    assert await db.fetch_value("SELECT count(*) FROM jobs") == 0
    with pytest.raises(InvalidRequest, match="Only the person who started this studio"):
        await studios.end(THREAD, 2, is_moderator=False)
    assert (await studios.end(THREAD, 2, is_moderator=True)).state is StudioState.ENDED


# --------------------------------------------------------------------------- budget
async def test_the_thread_budget_is_checked_atomically_with_the_reservation(
    db: Database,
) -> None:
    studios = await open_studio(db, budget=10)
    store = JobStore(db, time.time, ledger=Ledger(db, QuotaPolicy.unlimited()))
    requests = [studios.bind(make_request(f"pear {n}", user_id=n + 1)) for n in range(5)]
    results = await asyncio.gather(
        *(store.create(request, estimated_cost=3.0) for request in requests),
        return_exceptions=True,
    )
    refused = [r for r in results if isinstance(r, StudioBudgetExceeded)]
    assert len(refused) == 2 and len(results) - len(refused) == 3
    assert str(refused[0]) == (
        "This image would go over this studio's budget of 10 credits: 1 credit left, "
        "and it needs 3 credits."
    )
    assert await db.fetch_value("SELECT count(*) FROM ledger") == 3
    assert await studios.spent_mc(THREAD) == 9000
    # Outside the thread the studio's budget does not apply.
    elsewhere = studios.bind(replace(make_request("x"), channel_id=5))
    await store.create(elsewhere, estimated_cost=3.0)

    # A refund gives the budget back; the non-atomic precheck agrees with the transaction.
    job = next(r for r in results if not isinstance(r, BaseException))
    await store.transition(job.id, from_states=(JobState.QUEUED,), to=JobState.CANCELLED)
    assert await studios.spent_mc(THREAD) == 6000
    await studios.precheck(make_request("fits now", width=1024, height=1024))
    with pytest.raises(StudioBudgetExceeded):
        await studios.precheck(make_request("too big", width=1920, height=1920))


# --------------------------------------------------------------------------- the ending
@dataclass
class RecordingView:
    posts: list[tuple[int, str, bytes | None]] = field(default_factory=list)
    closed: list[int] = field(default_factory=list)
    fail_posts_to: set[int] = field(default_factory=set)
    images: dict[int, bytes] = field(default_factory=dict)

    async def read_image(self, studio: Studio, message_id: int) -> bytes | None:
        return self.images.get(message_id)

    async def post_gallery(
        self, studio: Studio, items: Sequence[GalleryItem], sheet: bytes | None, *, in_thread: bool
    ) -> int | None:
        channel_id = studio.thread_id if in_thread else studio.parent_channel_id
        if channel_id in self.fail_posts_to:
            raise ConnectionError("Discord is down")
        # The cog's rendering, so that the gallery's lines are checked as members see them.
        self.posts.append((channel_id, gallery_text(studio, items, in_thread=in_thread), sheet))
        return 1000 + len(self.posts)

    async def lock_thread(self, studio: Studio, actor_id: int) -> None:
        pass

    async def close_thread(self, studio: Studio) -> None:
        self.closed.append(studio.thread_id)


async def test_an_interrupted_ending_resumes_without_posting_twice(db: Database) -> None:
    studios = await open_studio(db)
    store = JobStore(db, time.time)
    job = await store.create(make_request("a pear, oil painting"), estimated_cost=3.0)
    await store.transition(job.id, from_states=(JobState.QUEUED,), to=JobState.SUBMITTED)
    await store.mark_ready(
        job.id, [OutputImage("image/png", 64, 48, png((1, 2, 3)))], seed=1, cost=3.0
    )
    await store.mark_delivered(job.id, 555)
    view = RecordingView(fail_posts_to={7}, images={555: png((200, 10, 10))})
    studios.view = view

    studios.clock = lambda: time.time() + 7200
    assert await studios.sweep() == 0  # the thread's gallery went out, the channel's did not
    assert [channel for channel, _, _ in view.posts] == [THREAD]
    assert (
        "**#1** <@1001> · `a pear` · [view](https://discord.com/channels/42/4242/555)"
        in (view.posts[0][1])
    )
    assert view.closed == []

    view.fail_posts_to.clear()
    restarted = Studios(db, AuditLog(db, audit_channel=lambda guild: None))
    await restarted.load()
    restarted.view = view
    assert await restarted.sweep() == 1
    assert [channel for channel, _, _ in view.posts] == [THREAD, 7]
    assert view.posts[0][2] == view.posts[1][2] is not None  # the same contact sheet
    assert view.closed == [THREAD]
    assert await restarted.sweep() == 0 and len(view.posts) == 2
    actions = await db.fetch_all("SELECT action FROM audit_log ORDER BY id")
    assert [r["action"] for r in actions] == ["studio started", "studio ended", "studio gallery"]


# --------------------------------------------------------------------------- contact sheet
def test_the_contact_sheet_numbers_tiles_and_keeps_unreadable_ones_as_placeholders() -> None:
    data = contact_sheet(
        [(1, png((250, 0, 0), (600, 300))), (2, b"not an image"), (3, png((0, 0, 250)))]
        + [(n, None) for n in range(4, 8)]
    )
    sheet = Image.open(io.BytesIO(data))
    step = SHEET_TILE + SHEET_GAP
    assert sheet.format == "PNG" and sheet.size == (SHEET_GAP + 5 * step, SHEET_GAP + 2 * step)
    centre = SHEET_GAP + SHEET_TILE // 2
    assert sheet.getpixel((centre, centre)) == (250, 0, 0)  # scaled down to fit
    assert sheet.getpixel((centre + step, centre)) == SHEET_PLACEHOLDER
    assert sheet.getpixel((centre + 2 * step, centre)) == (0, 0, 250)
    assert sheet.getpixel((centre, centre + step)) == SHEET_PLACEHOLDER


# --------------------------------------------------------------------------- replies
async def test_a_reply_is_a_request_if_it_mentions_the_bot_or_has_words_for_an_open_studio(
    db: Database,
) -> None:
    studios = await open_studio(db)

    def asks(channel_id: int, mentioned: bool, has_words: bool, to_images: bool) -> bool:
        return studios.reply_is_request(
            channel_id, mentioned=mentioned, has_words=has_words, to_images=to_images
        )

    assert asks(99, mentioned=True, has_words=False, to_images=False)  # anywhere
    assert asks(THREAD, mentioned=False, has_words=True, to_images=True)
    assert not asks(99, mentioned=False, has_words=True, to_images=True)  # not a studio
    assert not asks(THREAD, mentioned=False, has_words=False, to_images=True)  # a ping alone
    assert not asks(THREAD, mentioned=False, has_words=True, to_images=False)  # chatting
    await studios.lock(THREAD, 1, is_moderator=False)
    assert not asks(THREAD, mentioned=False, has_words=True, to_images=True)
    assert asks(THREAD, mentioned=True, has_words=True, to_images=True)
