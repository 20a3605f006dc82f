"""Prometheus metrics for the bot, kept in a registry of their own.

A private `CollectorRegistry` (never prometheus-client's global default) lets each bot, test
or benchmark hold independent metrics, and keeps libraries that register on the default
registry out of our `/metrics`.

Jobs by state are a *counter* of state entries (`fluxcord_jobs_total{state, variant}`), not a
gauge of current jobs: a counter is monotonic, so `rate()`/`increase()` stay correct across
restarts (Prometheus handles counter resets), and nothing has to be rebuilt from the database
when the bot resumes its jobs. A gauge maintained by +1/-1 in the process would drift at every
crash recovery. "How many right now" is answered by the queue-depth and active-tasks gauges,
which read the engine's live state when scraped.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from enum import StrEnum
from typing import Literal

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.gc_collector import GCCollector
from prometheus_client.process_collector import ProcessCollector

log = logging.getLogger(__name__)

# The classic text format: what `generate_latest` writes and every Prometheus version reads.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

ProviderOperation = Literal["submit", "poll", "download"]

# From a fast poll (~30 ms) to a slow submit or download of a large image (~1 min).
PROVIDER_LATENCY_BUCKETS = (
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
)  # fmt: skip


class WebhookRejection(StrEnum):
    """Why the webhook receiver refused a delivery (the `reason` label)."""

    BAD_SECRET = "bad_secret"  # no valid X-Webhook-Secret / X-BFL-Signature: 401
    UNKNOWN_TASK = "unknown_task"  # no such job, or another task than the job's: 404
    TOO_LARGE = "too_large"  # over the body cap: 413
    BAD_BODY = "bad_body"  # verified but unreadable (not JSON, no task id): 400


class Metrics:
    """Every metric the bot exports, with small methods for the engine and providers."""

    def __init__(self, *, process_metrics: bool = True) -> None:
        self.registry = CollectorRegistry()
        if process_metrics:
            # CPU, memory, open files, GC: what the default registry would have had.
            ProcessCollector(registry=self.registry)
            GCCollector(registry=self.registry)
        self.jobs = Counter(
            "fluxcord_jobs",
            "Jobs that entered each state, by state and variant",
            ["state", "variant"],
            registry=self.registry,
        )
        self.provider_latency = Histogram(
            "fluxcord_provider_request_seconds",
            "Time spent in provider calls, by provider and operation",
            ["provider", "operation"],
            buckets=PROVIDER_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.queue_depth = Gauge(
            "fluxcord_queue_depth",
            "Jobs waiting for a provider slot",
            registry=self.registry,
        )
        self.active_tasks = Gauge(
            "fluxcord_active_tasks",
            "Jobs currently running at a provider",
            registry=self.registry,
        )
        self.provider_busy = Counter(
            "fluxcord_provider_busy",
            "HTTP 429 (too many active tasks) answers seen, by provider",
            ["provider"],
            registry=self.registry,
        )
        self.webhooks_accepted = Counter(
            "fluxcord_webhooks_accepted",
            "Webhook deliveries verified and handed to the job engine",
            registry=self.registry,
        )
        self.webhooks_rejected = Counter(
            "fluxcord_webhooks_rejected",
            "Webhook deliveries refused, by reason",
            ["reason"],
            registry=self.registry,
        )
        self.credits_spent = Counter(
            "fluxcord_credits_spent",
            "Provider credits charged for finished jobs (1 BFL credit = $0.01)",
            ["provider", "variant"],
            registry=self.registry,
        )
        self.event_loop_lag = Gauge(
            "fluxcord_event_loop_lag_seconds",
            "How late the event loop runs scheduled work (worst of the last 2 s); past 0.25 s"
            " interactions are acknowledged before their checks",
            registry=self.registry,
        )
        # Discord's hidden shared limit: ~30 webhook messages per minute per channel.
        self.failovers = Counter(
            "fluxcord_failovers",
            "Requests BFL could not take, handed to the backup provider (FAILOVER=aiml); "
            "reason refused: the member's allowance could not cover the backup's estimate",
            ["variant", "reason"],
            registry=self.registry,
        )
        self.refusal_followups = Counter(
            "fluxcord_refusal_followups",
            "Refusals sent as an ephemeral followup because the interaction was already "
            "answered in public (the only followups the bot sends for a generation request; "
            "each counts against Discord's shared per-channel webhook limit)",
            registry=self.registry,
        )
        self.answered_before_checks = Counter(
            "fluxcord_answered_before_checks",
            'Requests answered "thinking…" before their checks because the bot was behind '
            "(an old interaction or a lagging event loop); a refusal then removes that answer",
            registry=self.registry,
        )
        self.discord_shared_limited = Counter(
            "fluxcord_discord_shared_limited",
            "Discord 429s with X-RateLimit-Scope: shared met while showing a job",
            registry=self.registry,
        )
        self.progress_given_way = Counter(
            "fluxcord_progress_updates_given_way",
            "Job progress updates not shown because their channel was under Discord's "
            "shared limit (its budget goes to results)",
            registry=self.registry,
        )
        # Provider accounts (bot/providers/accounts.py). `key` is the key's position among
        # its provider's keys, never the key.
        self.provider_key_valid = Gauge(
            "fluxcord_provider_key_valid",
            "1 when the provider accepted the key at its last check, 0 when it rejected it",
            ["provider", "key"],
            registry=self.registry,
        )
        self.provider_balance = Gauge(
            "fluxcord_provider_balance_credits",
            "Credits left on the key's provider account at its last check (1 credit = $0.01)",
            ["provider", "key"],
            registry=self.registry,
        )
        # Export every reason from the start: a series that appears only at its first event
        # makes `increase()` miss that event.
        for reason in WebhookRejection:
            self.webhooks_rejected.labels(reason=reason.value)

    # ----------------------------------------------------------------- engine-facing
    def bind_engine(
        self, *, queue_depth: Callable[[], int], active_tasks: Callable[[], int]
    ) -> None:
        """Read the gauges from the engine at scrape time: always current, never drifting."""
        self.queue_depth.set_function(_safe(queue_depth, "queue depth"))
        self.active_tasks.set_function(_safe(active_tasks, "active tasks"))

    def bind_loop_lag(self, lag: Callable[[], float]) -> None:
        self.event_loop_lag.set_function(lag)

    def job_state_changed(self, state: str, variant: str) -> None:
        """Call after each state change is written (a JobState is a str)."""
        self.jobs.labels(state=str(state), variant=variant).inc()

    def observe_provider_call(
        self, provider: str, operation: ProviderOperation, seconds: float
    ) -> None:
        self.provider_latency.labels(provider=provider, operation=operation).observe(
            max(0.0, seconds)
        )

    @contextmanager
    def time_provider_call(self, provider: str, operation: ProviderOperation) -> Iterator[None]:
        """`with metrics.time_provider_call("bfl", "poll"): ...` — failures are timed too."""
        started = time.perf_counter()
        try:
            yield
        finally:
            self.observe_provider_call(provider, operation, time.perf_counter() - started)

    def provider_rate_limited(self, provider: str) -> None:
        """A provider answered 429."""
        self.provider_busy.labels(provider=provider).inc()

    def failed_over(self, variant: str, reason: str) -> None:
        """A `variant` job BFL could not take went to the backup provider (or, `refused`,
        could not: bot/jobs/failover.py)."""
        self.failovers.labels(variant=variant, reason=reason).inc()

    def spent_credits(self, provider: str, variant: str, credits: float | None) -> None:
        """Credits a finished job was charged (BFL does not charge moderated or failed tasks,
        so call this when a job's result is ready, with the settled or quoted cost)."""
        if credits is None or not math.isfinite(credits) or credits <= 0:
            return
        self.credits_spent.labels(provider=provider, variant=variant).inc(credits)

    def provider_key_checked(
        self, provider: str, key: str, *, valid: bool, credits: float | None
    ) -> None:
        """A key check's answer (a check that got none changes nothing)."""
        self.provider_key_valid.labels(provider=provider, key=key).set(1 if valid else 0)
        if credits is not None and math.isfinite(credits):
            self.provider_balance.labels(provider=provider, key=key).set(credits)

    # ----------------------------------------------------------------- receiver-facing
    def webhook_accepted(self) -> None:
        self.webhooks_accepted.inc()

    def webhook_rejected(self, reason: WebhookRejection) -> None:
        self.webhooks_rejected.labels(reason=reason.value).inc()

    # ----------------------------------------------------------------- Discord-facing
    def refusal_followup(self) -> None:
        self.refusal_followups.inc()

    def answered_before_checks_now(self) -> None:
        self.answered_before_checks.inc()

    def shared_limit_met(self) -> None:
        self.discord_shared_limited.inc()

    def progress_gave_way(self) -> None:
        self.progress_given_way.inc()

    # ----------------------------------------------------------------- exposition
    def render(self) -> bytes:
        """The registry in Prometheus text format (see CONTENT_TYPE)."""
        return generate_latest(self.registry)


def _safe(read: Callable[[], int], what: str) -> Callable[[], float]:
    """A gauge callback that cannot break the whole scrape: NaN when the engine fails."""

    def value() -> float:
        try:
            return float(read())
        except Exception:
            log.debug("metrics: reading %s failed", what, exc_info=True)
            return math.nan

    return value
