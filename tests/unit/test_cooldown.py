"""The per-member pause between requests (commands, replies, result buttons)."""

from __future__ import annotations

from bot.cooldown import Cooldown


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_member_waits_between_actions_and_others_do_not() -> None:
    clock = Clock()
    cooldown = Cooldown(3.0, clock=clock)
    assert cooldown.retry_after(1) == 0
    clock.now += 1.0
    assert cooldown.retry_after(1) == 2.0
    assert cooldown.retry_after(2) == 0  # another member is not held up
    clock.now += 1.5
    assert cooldown.retry_after(1) == 0.5  # a refused click does not restart the pause
    clock.now += 0.5
    assert cooldown.retry_after(1) == 0


def test_zero_seconds_turns_it_off() -> None:
    cooldown = Cooldown(0, clock=Clock())
    assert [cooldown.retry_after(1) for _ in range(3)] == [0, 0, 0]


def test_members_whose_pause_is_over_are_forgotten() -> None:
    clock = Clock()
    cooldown = Cooldown(1.0, clock=clock)
    for user in range(2000):
        cooldown.retry_after(user)
        clock.now += 0.01
    clock.now += 5
    cooldown.retry_after(99999)
    assert len(cooldown._last) < 1100


def test_the_wait_is_told_in_whole_seconds_of_at_least_one() -> None:
    clock = Clock()
    cooldown = Cooldown(3.0, clock=clock)
    assert cooldown.wait_seconds(1) == 0  # counted
    clock.now += 0.5
    assert cooldown.wait_seconds(1) == 3  # 2.5 s left, rounded up
    clock.now += 2.4
    assert cooldown.wait_seconds(1) == 1  # 0.1 s left is still "1 s", never "0 s"
