"""Stored reference images are purged after the retention period, and only then."""

from __future__ import annotations

import io

from PIL import Image

from bot.jobs.models import JobState
from bot.providers.base import InputImage
from tests.conftest import EngineFactory, make_request


def reference() -> InputImage:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (1, 2, 3)).save(buffer, "PNG")
    return InputImage("image/png", 8, 8, buffer.getvalue())


async def test_only_finished_jobs_older_than_the_cutoff_lose_their_references(
    make_engine: EngineFactory,
) -> None:
    engine = await make_engine(start=False)
    store = engine.store
    old = await store.create(make_request("old", inputs=[reference()]), estimated_cost=3)
    await store.transition(
        old.id, from_states=[JobState.QUEUED], to=JobState.CANCELLED, finished_at=1000.0, closed=1
    )
    recent = await store.create(make_request("recent", inputs=[reference()]), estimated_cost=3)
    await store.transition(
        recent.id,
        from_states=[JobState.QUEUED],
        to=JobState.CANCELLED,
        finished_at=5000.0,
        closed=1,
    )
    waiting = await store.create(make_request("waiting", inputs=[reference()]), estimated_cost=3)

    assert await store.purge_inputs(finished_before=2000.0) == 1
    assert await store.inputs(old.id) == []
    assert len(await store.inputs(recent.id)) == 1
    assert len(await store.inputs(waiting.id)) == 1  # a queued job still needs them
    assert (await store.require(old.id)).reference_count == 1  # the count survives
