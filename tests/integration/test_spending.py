"""Who may spend the operator's money, through the real engine and the BFL stand-in: servers
not on ALLOWED_GUILD_IDS never reach the provider, and BOT_MONTHLY_CREDITS holds exactly over
every server (and, on PostgreSQL, every process) under a burst, with refunds and the
provider's real cost kept in the count. The owner's warnings go out once per threshold."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import replace
from pathlib import Path

import pytest

from bot.community.policy import Requester
from bot.drafts import Draft
from bot.jobs.engine import JobEngine
from bot.jobs.models import GenerationRequest, Job, JobState
from bot.ledger import (
    BotBudgetSpent,
    BudgetAlert,
    Ledger,
    QuotaPolicy,
    ServerNotAllowed,
    credits_to_mc,
)
from bot.ledger.spending import SERVER_NOT_ALLOWED_TEXT
from bot.providers.bfl import BFLClient
from bot.services import build_services
from bot.settings import Settings
from bot.storage.db import Database, open_database
from tests.conftest import BFL_KEY, FAST_POLLING, make_request
from tests.fakes.bfl_server import FakeBFL, Outcome
from tests.fakes.notifier import RecordingNotifier
from tests.postgres_fixtures import on_postgres
from tests.postgres_server import PostgresServer

SERVERS = (101, 202, 303)
PRO_ESTIMATE = 3.0  # what make_request's pro image is estimated (and reserved) at


def capped(credits: float) -> QuotaPolicy:
    return QuotaPolicy(bot_monthly_mc=credits_to_mc(credits))


def on_server(request: GenerationRequest, guild_id: int, user_id: int) -> GenerationRequest:
    return replace(request, guild_id=guild_id, user_id=user_id)


class Closed:
    """Jobs closed by any engine of the fleet (each engine sees only its own)."""

    def __init__(self) -> None:
        self.ids: set[str] = set()
        self._changed = asyncio.Condition()

    def listen(self, engine: JobEngine) -> None:
        engine.on_job_closed(lambda job: asyncio.ensure_future(self._add(job.id)))

    async def _add(self, job_id: str) -> None:
        async with self._changed:
            self.ids.add(job_id)
            self._changed.notify_all()

    async def wait_for(self, jobs: list[Job]) -> None:
        wanted = {job.id for job in jobs}
        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(lambda: wanted <= self.ids), 20)


Fleet = Callable[[QuotaPolicy], Awaitable[list[JobEngine]]]


@pytest.fixture
def closed() -> Closed:
    return Closed()


@pytest.fixture
async def fleet(
    database_target: str | Path, fake_bfl: FakeBFL, closed: Closed, request: pytest.FixtureRequest
) -> AsyncIterator[Fleet]:
    """Started engines on one store, each with its own connection and BFL client as
    separate processes would have: three on PostgreSQL, one on SQLite (one process per file)."""
    async with AsyncExitStack() as stack:
        if on_postgres():
            # Stopping an engine cancels its claim loop, maybe while it waits for a lock.
            server: PostgresServer = request.getfixturevalue("postgres_server")
            stack.enter_context(server.expect_error("canceling statement due to user request"))

        async def start(policy: QuotaPolicy) -> list[JobEngine]:
            engines = []
            for _ in range(3 if on_postgres() else 1):
                db = await open_database(database_target)
                stack.push_async_callback(db.close)
                client = BFLClient(
                    BFL_KEY, fake_bfl.base_url, backoff_base=0.01, allow_loopback=True
                )
                stack.push_async_callback(client.aclose)
                engine = JobEngine(
                    db, {"bfl": client}, RecordingNotifier(), ledger=Ledger(db, policy),
                    polling=FAST_POLLING,
                )  # fmt: skip
                closed.listen(engine)
                await engine.start()
                stack.push_async_callback(engine.stop)
                engines.append(engine)
            return engines

        yield start


async def accept(engine: JobEngine, request: GenerationRequest) -> Job | Exception:
    try:
        job, _ = await engine.accept(request)
    except Exception as exc:  # the refusals are what is counted
        return exc
    return job


async def ledger_total(db: Database) -> int:
    return int(await db.fetch_value("SELECT COALESCE(SUM(credits_mc), 0) FROM ledger"))


# --------------------------------------------------------------------------- allowed servers
async def test_a_server_not_on_the_list_is_refused_on_every_path_and_nothing_reaches_bfl(
    database_target: str | Path, fake_bfl: FakeBFL
) -> None:
    settings = Settings(
        discord_token="test-token",
        bfl_api_key=BFL_KEY,
        bfl_api_base=fake_bfl.base_url,
        allow_loopback_provider_urls=True,
        web_port=0,
        allowed_guild_ids="7, 8",
        **(
            {"database_path": database_target}
            if isinstance(database_target, Path)
            else {"database_url": database_target}
        ),
    )
    services = await build_services(settings, discord_connected=lambda: True)
    try:
        generation = services.generation
        stranger = Requester(user_id=1001, guild_id=42, channel_id=4242)
        # A command, a button, a reply, a context menu: each starts with the precheck.
        with pytest.raises(ServerNotAllowed) as refused:
            await generation.precheck(Draft(prompt="a lighthouse"), stranger)
        assert refused.value.user_message == SERVER_NOT_ALLOWED_TEXT
        # A request that skips it (a moderator approving one held before the list was set)
        # is refused by the ledger, in the transaction that would have reserved it.
        with pytest.raises(ServerNotAllowed):
            await generation.submit(make_request("a lighthouse"))
        # Starting a studio there is refused too.
        with pytest.raises(ServerNotAllowed):
            await services.studios.plan(stranger, "lighthouses")
        assert fake_bfl.submissions == []
        assert await services.db.fetch_value("SELECT count(*) FROM ledger") == 0
        assert await services.db.fetch_value("SELECT count(*) FROM jobs") == 0
        # A server on the list passes the same checks.
        await generation.precheck(Draft(prompt="a lighthouse"), replace(stranger, guild_id=7))
    finally:
        await services.close()


# --------------------------------------------------------------------------- the bot's budget
async def test_three_servers_bursting_never_spend_more_than_the_bot_budget(
    fleet: Fleet, fake_bfl: FakeBFL, closed: Closed
) -> None:
    """30 requests of 3 credits from three servers (through three processes on PostgreSQL)
    at once against 30 credits: exactly 10 are accepted, the rest refused before BFL."""
    engines = await fleet(capped(30))
    db = engines[0].store._db
    burst = [
        accept(
            engines[n % len(engines)],
            on_server(make_request(f"burst {n}"), SERVERS[n % 3], 5000 + n),
        )
        for n in range(30)
    ]
    results = await asyncio.gather(*burst)

    accepted = [result for result in results if isinstance(result, Job)]
    refused = [result for result in results if isinstance(result, BotBudgetSpent)]
    assert (len(accepted), len(refused)) == (10, 20), results
    assert refused[0].user_message.startswith(
        "This bot's monthly budget, shared by every server it's on, doesn't have enough left"
    )
    assert {job.guild_id for job in accepted} == set(SERVERS)  # the cap is not per server
    await closed.wait_for(accepted)
    assert len(fake_bfl.submissions) == 10  # nothing refused ever reached the provider
    assert sum(task.cost for task in fake_bfl.tasks.values()) == 30.0
    assert await ledger_total(db) == 30_000
    assert await engines[-1].ledger.budget.used() == 30_000


async def test_a_provider_cost_below_the_estimate_frees_the_difference(
    fleet: Fleet, fake_bfl: FakeBFL, closed: Closed, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(fake_bfl, "_quote", lambda spec, body, input_mp: (1.0, 2.5))
    engine, *_others = await fleet(capped(8))
    jobs = [await accept(engine, make_request(f"cheap {n}")) for n in range(2)]
    assert all(isinstance(job, Job) for job in jobs)
    assert isinstance(await accept(engine, make_request("third")), BotBudgetSpent)  # 9 > 8
    await closed.wait_for([job for job in jobs if isinstance(job, Job)])
    assert await engine.ledger.budget.used() == 5_000  # charged 2.5 each, not 3
    third = await accept(engine, make_request("third"))  # 5 + 3 = 8: fits exactly
    assert isinstance(third, Job)
    await closed.wait_for([third])
    assert await ledger_total(engine.store._db) == 7_500


async def test_a_refund_gives_its_reservation_back_to_the_bot_budget(
    fleet: Fleet, fake_bfl: FakeBFL, closed: Closed
) -> None:
    fake_bfl.script("forbidden", Outcome(final_status="Request Moderated"))
    engine, *_others = await fleet(capped(PRO_ESTIMATE))
    job, _ = await engine.accept(make_request("forbidden"))
    meanwhile = await accept(engine, on_server(make_request("meanwhile"), SERVERS[1], 2))
    assert isinstance(meanwhile, BotBudgetSpent)  # the estimate is held while the job runs
    await closed.wait_for([job])
    assert (await engine.store.require(job.id)).state is JobState.MODERATED
    assert await engine.ledger.budget.used() == 0
    again = await accept(engine, on_server(make_request("allowed"), SERVERS[2], 3))
    assert isinstance(again, Job)
    await closed.wait_for([again])
    assert await ledger_total(engine.store._db) == 3_000


async def test_a_provider_cost_above_the_estimate_counts_in_full(
    fleet: Fleet, fake_bfl: FakeBFL, closed: Closed, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(fake_bfl, "_quote", lambda spec, body, input_mp: (1.0, 4.0))
    engine, *_others = await fleet(capped(7))
    first, _ = await engine.accept(make_request("dear"))
    await closed.wait_for([first])
    assert await engine.ledger.budget.used() == 4_000  # not the 3 reserved
    # 3 credits are left, and a request estimated at 3 fits exactly; a second does not.
    second = await accept(engine, make_request("fits exactly"))
    assert isinstance(second, Job)
    third = await accept(engine, make_request("over"))
    assert isinstance(third, BotBudgetSpent)


# --------------------------------------------------------------------------- owner warnings
class Warnings:
    """The warnings every process's budget sent, to wait on."""

    def __init__(self) -> None:
        self.sent: list[BudgetAlert] = []
        self._changed = asyncio.Condition()

    async def sink(self, alert: BudgetAlert) -> None:
        async with self._changed:
            self.sent.append(alert)
            self._changed.notify_all()

    async def wait_for(self, count: int) -> list[BudgetAlert]:
        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(lambda: len(self.sent) >= count), 10)
        return list(self.sent)


async def test_the_owner_is_warned_once_at_80_and_once_at_100_percent(
    database_target: str | Path,
) -> None:
    """Two processes (two stores on one database) watch the same 10-credit budget; one
    restarts in the middle. Each threshold is announced exactly once between them."""
    async with AsyncExitStack() as stack:
        warnings = Warnings()  # from every process
        processes: list[Ledger] = []

        async def start_process() -> Ledger:
            db = await open_database(database_target)
            stack.push_async_callback(db.close)
            ledger = Ledger(db, capped(10))
            ledger.budget.on_alert(warnings.sink)
            await ledger.budget.start()
            stack.push_async_callback(ledger.budget.stop)
            processes.append(ledger)
            return ledger

        async def reserve(ledger: Ledger, job_id: str, credits: float) -> None:
            await ledger.db.run(
                lambda tx: ledger.reserve(
                    tx, job_id=job_id, guild_id=SERVERS[len(job_id) % 3], user_id=1,
                    role_ids=(), variant="pro", credits=credits, images=1,
                )
            )  # fmt: skip

        first, second = await start_process(), await start_process()
        await reserve(first, "a", 7.0)  # 70 %: nothing to say
        assert await first.budget.check_thresholds() is None
        await reserve(second, "bb", 1.0)  # 80 %
        [eighty] = await warnings.wait_for(1)
        assert (eighty.percent, eighty.used_mc, eighty.cap_mc) == (80, 8_000, 10_000)
        assert "used 80% of its monthly budget (BOT_MONTHLY_CREDITS): 8 of 10 credits" in (
            eighty.text
        )

        # A restarted process does not repeat it, however often it looks.
        restarted = await start_process()
        for ledger in processes:
            assert await ledger.budget.check_thresholds() is None
        await reserve(first, "ccc", 1.5)  # 95 %: still nothing new

        # A request that does not fit the 0.5 credits left is refused, and that is 100 %.
        with pytest.raises(BotBudgetSpent):
            await reserve(restarted, "dddd", 1.0)
        [_, hundred] = await warnings.wait_for(2)
        assert (hundred.percent, hundred.used_mc) == (100, 9_500)
        assert "has too little left of its monthly budget" in hundred.text
        for ledger in processes:
            assert await ledger.budget.check_thresholds() is None
        rows = await first.db.fetch_all("SELECT percent FROM bot_budget_alerts ORDER BY 1")
        assert [row["percent"] for row in rows] == [80, 100]
        assert len(warnings.sent) == 2


async def test_no_cap_means_no_count_and_no_warnings(db: Database) -> None:
    ledger = Ledger(db, QuotaPolicy())
    warnings = Warnings()
    ledger.budget.on_alert(warnings.sink)
    await ledger.budget.start()

    async def reserve(n: int) -> None:
        await db.run(
            lambda tx: ledger.reserve(
                tx, job_id=f"j{n}", guild_id=SERVERS[n], user_id=1, role_ids=(),
                variant="max", credits=10_000, images=1,
            )
        )  # fmt: skip

    for n in range(3):
        await reserve(n)
    assert await ledger.budget.check_thresholds() is None
    assert warnings.sent == []
    assert await ledger_total(db) == 30_000_000
