"""What the benches share: percentiles, free ports, a process's CPU from /proc, and the
webhook receiver's link to an engine built after it."""

from __future__ import annotations

import math
import os
import socket
from pathlib import Path

from bot.jobs.engine import JobEngine
from bot.jobs.webhooks import WebhookSubscription
from bot.providers.base import TaskResult

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, math.ceil(fraction * len(ordered)) - 1))
    return ordered[index]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _stat_fields(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2 :].split()  # fields from the 3rd (state) on


def cpu_seconds(pid: int, *, reaped: bool = False) -> float:
    """utime+stime of `pid` (and of its waited-for children, `reaped`)."""
    fields = _stat_fields(pid)
    if fields is None:
        return 0.0
    ticks = int(fields[11]) + int(fields[12])
    if reaped:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / CLOCK_TICKS


def server_cpu_seconds(postmaster: int) -> float:
    """PostgreSQL's CPU: the postmaster, its live children, and those it has reaped."""
    total = cpu_seconds(postmaster, reaped=True)
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            fields = _stat_fields(int(entry.name))
            if fields is not None and int(fields[1]) == postmaster:
                total += (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    return total


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def always_ok() -> object:
    """A health check that passes (the benches measure jobs, not health)."""
    return 1


class EngineTarget:
    """Forwards webhooks to the engine, which is built after the receiver (it needs its URL)."""

    engine: JobEngine

    async def webhook_subscription(self, job_id: str) -> WebhookSubscription | None:
        return await self.engine.webhook_subscription(job_id)

    async def webhook_result(self, job_id: str, task_id: str, result: TaskResult) -> None:
        await self.engine.webhook_result(job_id, task_id, result)
