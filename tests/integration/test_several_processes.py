"""Several bot processes on one PostgreSQL database, each an engine with its own store
connection, webhook receiver and BFL client (as separate processes would have): webhooks
reaching the process that does not own the job, a lost LISTEN connection, the slot cap held
by an open claim, and a process that dies mid-flight."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any

import asyncpg
import pytest

from bot.invalidation import Cache, SharedCaches
from bot.jobs.claims import ProviderKey, SharedQueue
from bot.jobs.engine import JobEngine, WebhookConfig
from bot.jobs.following import PollingPolicy
from bot.jobs.leases import ProcessLease
from bot.jobs.models import JobState
from bot.moderation.strikes import Moderation
from bot.operations.metrics import Metrics
from bot.operations.web import HealthChecks, WebServer, create_app
from bot.providers.bfl import BFLClient
from bot.servers.audit import AuditLog
from bot.servers.settings import SettingsStore
from bot.storage.db import Database, Tx, open_database
from bot.storage.postgres import PostgresDatabase
from tests.conftest import BFL_KEY, make_request
from tests.fakes.bfl_server import FakeBFL
from tests.fakes.notifier import RecordingNotifier
from tests.postgres_fixtures import DsnFactory, on_postgres
from tests.postgres_server import PostgresServer

pytestmark = pytest.mark.skipif(not on_postgres(), reason="several processes need PostgreSQL")

# Webhooks carry the result; polls would only come after the long grace period.
WEBHOOK_FIRST = PollingPolicy(initial=5.0, maximum=5.0, deadline=30)


@dataclass
class Process:
    db: Database
    engine: JobEngine
    notifier: RecordingNotifier
    receiver: WebServer
    client: BFLClient


@pytest.fixture
async def fleet(
    postgres_dsn_factory: DsnFactory, fake_bfl: FakeBFL
) -> AsyncIterator[Callable[..., object]]:
    dsn = postgres_dsn_factory()
    async with AsyncExitStack() as stack:

        async def start(
            *,
            webhook_to: WebServer | None = None,
            with_bfl: bool = True,
            polling: PollingPolicy = WEBHOOK_FIRST,
            lease_seconds: float | None = None,
            engine_started: bool = True,
        ) -> Process:
            db = await open_database(dsn)
            stack.push_async_callback(db.close)
            metrics = Metrics(process_metrics=False)
            holder: list[JobEngine] = []

            class Target:  # the receiver exists before its engine (the engine needs its URL)
                async def webhook_subscription(self, job_id: str):  # type: ignore[no-untyped-def]
                    return await holder[0].webhook_subscription(job_id)

                async def webhook_result(self, job_id, task_id, result):  # type: ignore[no-untyped-def]
                    await holder[0].webhook_result(job_id, task_id, result)

            health = HealthChecks(
                ping_database=lambda: db.fetch_value("SELECT 1"),
                discord_connected=lambda: True,
                queue_depth=lambda: 0,
            )
            receiver = WebServer(
                create_app(metrics=metrics, health=health, webhook_target=Target()),
                "127.0.0.1",
                0,
            )
            await receiver.start()
            stack.push_async_callback(receiver.stop)
            client = BFLClient(BFL_KEY, fake_bfl.base_url, backoff_base=0.01, allow_loopback=True)
            stack.push_async_callback(client.aclose)
            notifier = RecordingNotifier()
            webhook_server = webhook_to or receiver
            engine = JobEngine(
                db,
                {"bfl": client} if with_bfl else {},
                notifier,
                metrics=metrics,
                polling=polling,
                lease_seconds=lease_seconds,
                webhooks=WebhookConfig(f"http://127.0.0.1:{webhook_server.port}", grace=5.0),
            )
            holder.append(engine)
            if engine_started:
                await engine.start()
                stack.push_async_callback(engine.stop)
            return Process(db, engine, notifier, receiver, client)

        yield start


async def test_a_webhook_reaching_another_process_finishes_the_owners_job(
    fleet: Callable[..., object], fake_bfl: FakeBFL
) -> None:
    # The load balancer sends every webhook to the process that has no BFL key at all.
    receiver_only: Process = await fleet(with_bfl=False)  # type: ignore[misc]
    owner: Process = await fleet(webhook_to=receiver_only.receiver)  # type: ignore[misc]
    job, _ = await owner.engine.accept(make_request("routed elsewhere"))
    [final] = await owner.engine.wait_closed([job.id], 5)
    assert final.state is JobState.DELIVERED
    assert final.owner == owner.engine.lease.id
    assert owner.engine.stats.polls == 0  # the recorded webhook woke it, not a poll
    assert [a.status_code for a in fake_bfl.webhook_attempts] == [200]
    shown = owner.notifier.outcome(job.id)
    assert shown is not None
    assert shown.images == [fake_bfl.image_bytes(final.provider_task_id or "")]
    assert receiver_only.notifier.deliver_calls == {}  # only the owner shows it


async def test_a_lost_listen_connection_still_lets_the_job_finish(
    fleet: Callable[..., object],
    fake_bfl: FakeBFL,
    postgres_server: PostgresServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    receiver_only: Process = await fleet(with_bfl=False)  # type: ignore[misc]
    owner: Process = await fleet(webhook_to=receiver_only.receiver)  # type: ignore[misc]
    assert isinstance(owner.db, PostgresDatabase)
    listener = owner.db.listener
    for _ in range(100):
        if listener.backend_pid is not None:
            break
        await asyncio.sleep(0.02)
    pid = listener.backend_pid
    assert pid is not None
    real_connect = asyncpg.connect

    async def slow_reconnect(*args: Any, **kwargs: Any) -> Any:
        await asyncio.sleep(6)  # the webhook's notification is long gone by then
        return await real_connect(*args, **kwargs)

    monkeypatch.setattr("bot.storage.postgres.asyncpg.connect", slow_reconnect)
    with postgres_server.expect_error("terminating connection due to administrator command"):
        job, _ = await owner.engine.accept(make_request("notified into the void"))
        postgres_server.admin(f"SELECT pg_terminate_backend({pid})")
        [final] = await owner.engine.wait_closed([job.id], 8)
    assert final.state is JobState.DELIVERED
    assert listener.reconnects == 1 and listener.backend_pid is None  # still reconnecting
    assert owner.engine.stats.polls == 0  # found by the owner's look at recorded webhooks
    assert owner.notifier.deliver_calls == {job.id: 1}


async def test_an_open_claim_stops_another_process_at_the_cap(
    fleet: Callable[..., object], postgres_dsn_factory: DsnFactory
) -> None:
    first: Process = await fleet(engine_started=False)  # type: ignore[misc]
    second: Process = await fleet(engine_started=False)  # type: ignore[misc]
    for n in range(2):
        request = make_request(f"queued {n}", user_id=n + 1)
        await first.engine.store.create(request, estimated_cost=1)
    key = ProviderKey("bfl:only", "bfl", first.client, 1)
    leases = [ProcessLease(first.db), ProcessLease(second.db)]
    for lease in leases:
        await lease.register()
    queues = [SharedQueue(first.db, [key], lambda: 0.0), SharedQueue(second.db, [key], lambda: 0.0)]
    holding, release = asyncio.Event(), asyncio.Event()

    async def claim_and_hold(tx: Tx) -> object:
        claimed = await queues[0]._claim(tx, "bfl", [key], leases[0].id, 0.0, 1)
        holding.set()
        await release.wait()  # the claim is not committed yet
        return claimed

    held = asyncio.create_task(first.db.run(claim_and_hold))
    await asyncio.wait_for(holding.wait(), 5)
    other = asyncio.create_task(queues[1].claim("bfl", leases[1].id, lease_margin=0.0))
    await asyncio.sleep(0.3)
    assert not other.done()  # it waits for the open claim instead of counting around it
    release.set()
    assert (await held).claims != []
    assert await asyncio.wait_for(other, 5) is None  # the one slot is taken: no second claim
    states = await first.db.fetch_all("SELECT state FROM jobs ORDER BY state")
    assert [row["state"] for row in states] == ["queued", "submitting"]


async def test_a_process_that_dies_mid_flight_has_its_job_adopted_and_delivered_once(
    fleet: Callable[..., object], fake_bfl: FakeBFL
) -> None:
    fast = PollingPolicy(initial=0.1, maximum=0.3, deadline=30)
    doomed: Process = await fleet(polling=fast, lease_seconds=1.0)  # type: ignore[misc]
    fake_bfl.latency = 1.5
    fake_bfl.webhook_mode = "drop"  # only polling can finish it
    job, _ = await doomed.engine.accept(make_request("orphaned"))
    for _ in range(200):
        if (await doomed.engine.store.require(job.id)).state is JobState.SUBMITTED:
            break
        await asyncio.sleep(0.02)
    # Killed: its tasks stop, its lease is never given up (no clean stop).
    tasks = [*doomed.engine._tasks, *doomed.engine._job_tasks]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    heir: Process = await fleet(polling=fast, lease_seconds=1.0)  # type: ignore[misc]
    [final] = await heir.engine.wait_closed([job.id], 10)
    assert final.state is JobState.DELIVERED and final.owner == heir.engine.lease.id
    assert len(fake_bfl.submissions) == 1  # adopted and polled, never submitted again
    assert heir.notifier.deliver_calls == {job.id: 1}
    # The dead process, come back late, can no longer change the job.
    late = await doomed.engine.store.transition(
        job.id, from_states=(JobState.DELIVERED,), to=JobState.FAILED
    )
    assert late is None


async def test_a_moderators_change_in_one_process_reaches_the_others_caches(
    postgres_dsn_factory: DsnFactory,
) -> None:
    dsn = postgres_dsn_factory()
    async with AsyncExitStack() as stack:
        processes = []
        for _ in range(2):
            db = await open_database(dsn)
            stack.push_async_callback(db.close)
            audit = AuditLog(db, audit_channel=lambda guild: None)
            settings = SettingsStore(db, audit, known_variants=lambda: ["pro", "max"])
            moderation = Moderation(db, audit, settings=settings.get)
            await settings.load()
            await moderation.load()
            caches = SharedCaches(db)
            caches.register(Cache.SERVER_SETTINGS, settings.load)
            caches.register(Cache.MODERATION, moderation.load)
            await caches.start()
            stack.push_async_callback(caches.stop)
            processes.append((settings, moderation))
        (settings_a, moderation_a), (settings_b, moderation_b) = processes
        await asyncio.sleep(0.2)  # both LISTEN connections are up
        await settings_a.update(42, 7, "only pro", allowed_variants=frozenset({"pro"}))
        await moderation_a.add_term(42, 7, "forbidden", is_regex=False)
        for _ in range(100):
            if settings_b.get(42).allowed_variants and moderation_b.server_terms(42):
                break
            await asyncio.sleep(0.02)
        assert settings_b.get(42).allowed_variants == frozenset({"pro"})
        assert [term.pattern for term in moderation_b.server_terms(42)] == ["forbidden"]
