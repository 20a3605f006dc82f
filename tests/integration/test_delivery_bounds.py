"""A result Discord will not take ends in a bounded number of attempts, with one clear
failure that says the image was charged (it exists, and the provider billed it)."""

from __future__ import annotations

from bot.errors import DeliveryImpossible
from bot.jobs.models import Job, JobState
from bot.providers.base import OutputImage
from bot.storage.db import Database
from tests.conftest import EngineFactory, make_request
from tests.fakes.notifier import RecordingNotifier


class RefusingNotifier(RecordingNotifier):
    """Discord refuses the result for good (say, 400/50035), while texts still go through."""

    async def job_delivered(self, job: Job, images: list[OutputImage]) -> int:
        self.deliver_calls[job.id] = self.deliver_calls.get(job.id, 0) + 1
        raise DeliveryImpossible("Discord refused the message (error 50035)")


async def ledger_status(db: Database, job_id: str) -> str:
    row = await db.fetch_one("SELECT status FROM ledger WHERE job_id = ?", (job_id,))
    assert row is not None
    return str(row["status"])


async def test_transient_trouble_is_retried_a_bounded_number_of_times(
    make_engine: EngineFactory, notifier: RecordingNotifier, db: Database
) -> None:
    notifier.fail_next_deliveries = 1_000_000  # Discord is down for good
    engine = await make_engine(start=False)
    engine.delivery.attempts, engine.delivery.backoff = 3, 0.01
    await engine.start()
    job, _ = await engine.accept(make_request("a lost heron"))
    [closed] = await engine.wait_closed([job.id], 10)
    assert notifier.deliver_calls[job.id] == 3
    assert closed.state is JobState.FAILED and closed.closed
    assert closed.error is not None
    assert "Discord kept failing" in closed.error and "You were charged" in closed.error
    # The member is told (a text usually gets through where the image did not).
    [shown] = notifier.shown_for(job.id)
    assert shown.kind == "failure" and shown.text == closed.error
    assert await ledger_status(db, job.id) == "charged"


async def test_a_refused_result_fails_at_once_and_is_not_retried_after_a_restart(
    make_engine: EngineFactory, db: Database
) -> None:
    refusing = RefusingNotifier()
    engine = await make_engine(job_notifier=refusing)
    job, _ = await engine.accept(make_request("a refused heron"))
    [closed] = await engine.wait_closed([job.id], 10)
    assert refusing.deliver_calls[job.id] == 1
    assert closed.state is JobState.FAILED
    charged = closed.cost if closed.cost is not None else closed.estimated_cost
    assert closed.error == (
        "Your image was made, but it could not be posted here: Discord refused the message "
        f"(error 50035). You were charged {charged:g} credits for it."
    )
    assert [m.kind for m in refusing.shown_for(job.id)] == ["failure"]
    assert await ledger_status(db, job.id) == "charged"
    await engine.stop()
    again = await make_engine(job_notifier=refusing)
    assert job.id not in {j.id for j in await again.store.open_jobs()}
    assert refusing.deliver_calls[job.id] == 1
