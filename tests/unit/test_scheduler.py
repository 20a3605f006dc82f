"""Round-robin fairness and the concurrency cap of a provider lane."""

from __future__ import annotations

import asyncio

from bot.jobs.scheduler import FairQueue, ProviderLane, Slot


def test_one_users_backlog_does_not_starve_a_newcomer() -> None:
    queue: FairQueue[int, str] = FairQueue()
    for n in range(50):
        queue.push(1, f"heavy-{n}")
    queue.push(2, "newcomer")
    assert queue.position("newcomer") == 2
    assert [queue.pop(), queue.pop()] == ["heavy-0", "newcomer"]


def test_round_robin_order_and_positions_agree() -> None:
    queue: FairQueue[int, str] = FairQueue()
    for owner, item in [(1, "a1"), (1, "a2"), (1, "a3"), (2, "b1"), (3, "c1"), (3, "c2")]:
        queue.push(owner, item)
    expected = ["a1", "b1", "c1", "a2", "c2", "a3"]
    assert list(queue.order()) == expected
    assert [queue.position(item) for item in expected] == [1, 2, 3, 4, 5, 6]
    assert [queue.pop() for _ in range(6)] == expected
    assert len(queue) == 0


def test_requeue_at_front_goes_next() -> None:
    queue: FairQueue[int, str] = FairQueue()
    queue.push(1, "a1")
    queue.push(2, "b1")
    queue.push(3, "retry", front=True)
    assert queue.pop() == "retry"


def test_remove_forgets_the_item() -> None:
    queue: FairQueue[int, str] = FairQueue()
    queue.push(1, "a1")
    queue.push(1, "a2")
    assert queue.remove("a1")
    assert not queue.remove("a1")
    assert queue.position("a2") == 1
    assert "a1" not in queue


async def test_lane_never_exceeds_its_cap_and_serves_everything() -> None:
    started: list[str] = []
    slots: list[Slot] = []
    high_water = 0

    def start(job_id: str, slot: Slot) -> None:
        nonlocal high_water
        started.append(job_id)
        slots.append(slot)
        high_water = max(high_water, lane.active)

    lane = ProviderLane("test", 3, start)
    for n in range(10):
        lane.enqueue(n % 2, f"job-{n}")
    runner = asyncio.create_task(lane.run())
    try:
        for _ in range(5):
            await asyncio.sleep(0)
        assert started == ["job-0", "job-1", "job-2"]  # the cap holds the rest back
        released = 0
        while len(started) < 10:
            slots[released].release()  # one task finishes, one more may start
            released += 1
            for _ in range(5):
                await asyncio.sleep(0)
            assert len(started) == 3 + released
        assert high_water == 3
        assert lane.queued == 0
    finally:
        runner.cancel()


async def test_provider_busy_pauses_admission() -> None:
    started: list[str] = []
    now = [100.0]
    lane = ProviderLane("test", 5, lambda job_id, slot: started.append(job_id),
                        monotonic=lambda: now[0])
    lane.provider_busy(retry_after=2.0)
    lane.enqueue(1, "job")
    runner = asyncio.create_task(lane.run())
    try:
        for _ in range(5):
            await asyncio.sleep(0)
        assert started == []
        now[0] = 102.5  # the pause is over; the lane's sleep of 2 s is still running
        await asyncio.sleep(2.1)
        assert started == ["job"]
    finally:
        runner.cancel()


def test_slot_release_is_idempotent() -> None:
    lane = ProviderLane("test", 2, lambda job_id, slot: None)
    slot = lane.occupy()
    assert lane.active == 1
    slot.release()
    slot.release()
    assert lane.active == 0
