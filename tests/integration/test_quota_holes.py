"""Multi-image requests through the real engine and the AI/ML stand-in: a request reserves
every image (and credit) it can produce, in every check that admits it."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from bot.community.studios import StudioBudgetExceeded, Studios, make_plan
from bot.jobs.engine import JobEngine
from bot.jobs.models import JobState
from bot.ledger import Ledger, Metric, Period, QuotaExceeded, Scope
from bot.providers.aiml import AIMLClient
from bot.servers.audit import AuditLog
from bot.storage.db import Database
from tests.conftest import FAST_POLLING, make_request
from tests.fakes.aiml_server import FakeAIML
from tests.fakes.notifier import RecordingNotifier

KEY = "test-aiml-key"
GUILD = 42  # make_request's guild
THREAD = 4242  # make_request's channel
MEMBER = 1001
MOD = 9


@pytest.fixture
async def aiml() -> AsyncIterator[FakeAIML]:
    async with FakeAIML(api_key=KEY, latency=0.02) as fake:
        yield fake


@pytest.fixture
async def engine(db: Database, aiml: FakeAIML) -> AsyncIterator[JobEngine]:
    client = AIMLClient(KEY, aiml.base_url, allow_loopback=True)
    started = JobEngine(
        db, {"aiml": client}, RecordingNotifier(), polling=FAST_POLLING, ledger=Ledger(db)
    )
    await started.start()
    yield started
    await started.stop()
    await client.aclose()


async def test_four_images_do_not_fit_an_allowance_of_two(
    engine: JobEngine, db: Database, aiml: FakeAIML
) -> None:
    await engine.ledger.admin.set_limit(
        GUILD, MOD, Scope.USER, MEMBER, Period.DAY, Metric.IMAGES, 2
    )
    request = make_request("four foxes", variant="dev", options={"num_images": 4})

    with pytest.raises(QuotaExceeded) as checked:
        await engine.check_quota(request)
    with pytest.raises(QuotaExceeded) as accepted:
        await engine.accept(request)

    for refusal in (checked.value, accepted.value):
        assert "your daily image allowance (2 images a day)" in str(refusal)
        assert "Left today: 2 images" in str(refusal)
        assert "it needs 4 images and 5.04 credits" in str(refusal)
    assert await db.fetch_value("SELECT count(*) FROM jobs") == 0
    assert await db.fetch_value("SELECT count(*) FROM ledger") == 0
    assert aiml.requests == []

    # Two images still fit, and are what is held and then charged.
    two = make_request("two foxes", variant="dev", options={"num_images": 2})
    job, _ = await engine.accept(two)
    held = await db.fetch_one("SELECT reserved_images FROM ledger WHERE job_id = ?", (job.id,))
    assert held is not None and held["reserved_images"] == 2
    [final] = await engine.wait_closed([job.id], 5)
    assert final.state is JobState.DELIVERED
    row = await db.fetch_one("SELECT status, images FROM ledger WHERE job_id = ?", (job.id,))
    assert row is not None and (row["status"], row["images"]) == ("charged", 2)
    usage = await engine.ledger.member_usage(GUILD, MEMBER)
    assert (usage.windows[0].images, usage.windows[0].remaining_images) == (2, 0)
    with pytest.raises(QuotaExceeded):
        await engine.accept(make_request("one more", variant="dev"))


async def test_a_running_multi_image_job_holds_all_its_images(
    engine: JobEngine, db: Database, aiml: FakeAIML
) -> None:
    await engine.ledger.admin.set_limit(
        GUILD, MOD, Scope.USER, MEMBER, Period.DAY, Metric.IMAGES, 5
    )
    aiml.latency = 1.0  # still running while the second request arrives
    first, _ = await engine.accept(make_request("three", variant="dev", options={"num_images": 3}))
    with pytest.raises(QuotaExceeded, match="Left today: 2 images"):
        await engine.accept(make_request("three more", variant="dev", options={"num_images": 3}))
    await engine.accept(make_request("two more", variant="dev", options={"num_images": 2}))
    usage = await engine.ledger.member_usage(GUILD, MEMBER)
    assert usage.held_images == 5
    await engine.wait_closed([first.id], 5)


async def test_a_provider_that_returns_more_images_than_asked_is_charged_what_was_asked(
    engine: JobEngine, db: Database, aiml: FakeAIML
) -> None:
    aiml.extra_images = 3  # a misbehaving answer: 4 images for a request of 1
    job, _ = await engine.accept(make_request("one fox", variant="dev"))
    [final] = await engine.wait_closed([job.id], 5)
    assert final.state is JobState.DELIVERED
    row = await db.fetch_one("SELECT images FROM ledger WHERE job_id = ?", (job.id,))
    assert row is not None and row["images"] == 1
    notifier = engine.notifier
    assert isinstance(notifier, RecordingNotifier)
    [shown] = notifier.messages.values()
    assert shown.images == [aiml.image_bytes(0, 0)]


async def test_a_studio_budget_counts_every_image_of_a_request(
    engine: JobEngine, db: Database
) -> None:
    studios = Studios(db, AuditLog(db, audit_channel=lambda guild: None))
    await studios.load()
    await studios.start(
        make_plan("foxes", None, 1, 3), thread_id=THREAD, guild_id=GUILD, parent_channel_id=7,
        starter_id=1,
    )  # fmt: skip
    four = make_request("four", variant="dev", options={"num_images": 4})  # 5.04 credits
    with pytest.raises(StudioBudgetExceeded, match=r"it needs 5\.04 credits"):
        await studios.precheck(four)
    with pytest.raises(StudioBudgetExceeded):
        await engine.accept(studios.bind(four))
    assert await db.fetch_value("SELECT count(*) FROM ledger") == 0
    one, _ = await engine.accept(studios.bind(make_request("one", variant="dev")))
    assert await studios.spent_mc(THREAD) == 1260
    await engine.wait_closed([one.id], 5)
