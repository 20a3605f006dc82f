"""Shared fixtures: a temporary database, the BFL stand-in, and an engine wired to both."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from bot.catalogue import get_variant
from bot.jobs.engine import JobEngine
from bot.jobs.following import PollingPolicy
from bot.jobs.models import GenerationRequest, Job
from bot.providers.base import InputImage
from bot.providers.bfl import BFLClient
from bot.storage.db import Database, open_database
from tests.fakes.bfl_server import FakeBFL
from tests.fakes.notifier import RecordingNotifier

BFL_KEY = "test-bfl-key-0123456789"
pytest_plugins = ["tests.postgres_fixtures"]


@pytest.fixture
async def db(database_target: str | Path) -> AsyncIterator[Database]:
    database = await open_database(database_target)
    yield database
    await database.close()


@pytest.fixture
async def fake_bfl() -> AsyncIterator[FakeBFL]:
    async with FakeBFL(api_key=BFL_KEY, latency=0.05) as fake:
        yield fake


@pytest.fixture
def notifier() -> RecordingNotifier:
    return RecordingNotifier()


FAST_POLLING = PollingPolicy(initial=0.02, maximum=0.1, deadline=5.0)

EngineFactory = Callable[..., Awaitable[JobEngine]]


@pytest.fixture
async def make_engine(
    db: Database, fake_bfl: FakeBFL, notifier: RecordingNotifier
) -> AsyncIterator[EngineFactory]:
    """Build (and later stop) engines on the shared database, each with its own BFL client."""
    engines: list[tuple[JobEngine, BFLClient]] = []

    async def build(
        *,
        database: Database | None = None,
        job_notifier: Any = None,
        max_active: int = 24,
        polling: PollingPolicy = FAST_POLLING,
        start: bool = True,
    ) -> JobEngine:
        client = BFLClient(BFL_KEY, fake_bfl.base_url, backoff_base=0.01, allow_loopback=True)
        engine = JobEngine(
            database or db,
            {"bfl": client},
            job_notifier or notifier,
            max_active=max_active,
            polling=polling,
        )
        engines.append((engine, client))
        if start:
            await engine.start()
        return engine

    yield build
    for engine, client in engines:
        await engine.stop()
        await client.aclose()


def make_request(
    prompt: str,
    *,
    variant: str = "pro",
    user_id: int = 1001,
    seed: int | None = 1234,
    inputs: list[InputImage] | None = None,
    **validate: Any,
) -> GenerationRequest:
    spec = get_variant(variant)
    params = spec.validate(prompt, seed=seed, rng=random.Random(0), **validate)
    return GenerationRequest(
        user_id=user_id,
        guild_id=42,
        channel_id=4242,
        variant=spec,
        params=params,
        inputs=inputs or [],
    )


async def finished(engine: JobEngine, job: Job) -> Job:
    return await engine.store.require(job.id)
