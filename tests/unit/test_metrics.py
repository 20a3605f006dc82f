"""bot.operations.metrics: each method moves the right series, and registries stay independent."""

from __future__ import annotations

import math

import pytest
from prometheus_client.parser import text_string_to_metric_families

from bot.operations.metrics import Metrics, WebhookRejection


def value(metrics: Metrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def test_job_states_are_counted_by_state_and_variant() -> None:
    metrics = Metrics(process_metrics=False)
    metrics.job_state_changed("queued", "pro")
    metrics.job_state_changed("queued", "pro")
    metrics.job_state_changed("submitted", "klein-4b")
    assert value(metrics, "fluxcord_jobs_total", state="queued", variant="pro") == 2
    assert value(metrics, "fluxcord_jobs_total", state="submitted", variant="klein-4b") == 1
    assert value(metrics, "fluxcord_jobs_total", state="submitted", variant="pro") is None


def test_provider_latency_histogram() -> None:
    metrics = Metrics(process_metrics=False)
    metrics.observe_provider_call("bfl", "submit", 0.3)
    metrics.observe_provider_call("bfl", "submit", -1.0)  # clock oddity: clamped, not lost
    labels = {"provider": "bfl", "operation": "submit"}
    assert value(metrics, "fluxcord_provider_request_seconds_count", **labels) == 2
    assert value(metrics, "fluxcord_provider_request_seconds_sum", **labels) == pytest.approx(0.3)
    assert value(metrics, "fluxcord_provider_request_seconds_bucket", le="0.25", **labels) == 1
    assert value(metrics, "fluxcord_provider_request_seconds_bucket", le="0.5", **labels) == 2


def test_time_provider_call_times_failures_too() -> None:
    metrics = Metrics(process_metrics=False)
    with metrics.time_provider_call("bfl", "poll"):
        pass
    with pytest.raises(RuntimeError), metrics.time_provider_call("bfl", "poll"):
        raise RuntimeError("boom")
    count = value(
        metrics, "fluxcord_provider_request_seconds_count", provider="bfl", operation="poll"
    )
    assert count == 2


def test_counters() -> None:
    metrics = Metrics(process_metrics=False)
    metrics.provider_rate_limited("bfl")
    metrics.webhook_accepted()
    metrics.webhook_rejected(WebhookRejection.TOO_LARGE)
    metrics.spent_credits("bfl", "pro", 3.0)
    metrics.spent_credits("bfl", "pro", 1.5)
    for nothing in (None, 0.0, -2.0, math.nan, math.inf):
        metrics.spent_credits("bfl", "pro", nothing)
    assert value(metrics, "fluxcord_provider_busy_total", provider="bfl") == 1
    assert value(metrics, "fluxcord_webhooks_accepted_total") == 1
    assert value(metrics, "fluxcord_webhooks_rejected_total", reason="too_large") == 1
    assert value(metrics, "fluxcord_credits_spent_total", provider="bfl", variant="pro") == 4.5


def test_every_rejection_reason_is_exported_from_the_start() -> None:
    metrics = Metrics(process_metrics=False)
    for reason in ("bad_secret", "unknown_task", "too_large", "bad_body"):
        assert value(metrics, "fluxcord_webhooks_rejected_total", reason=reason) == 0


def test_gauges_read_the_engine_when_scraped() -> None:
    metrics = Metrics(process_metrics=False)
    assert value(metrics, "fluxcord_queue_depth") == 0  # before binding
    depth = [4]
    metrics.bind_engine(queue_depth=lambda: depth[0], active_tasks=lambda: 24)
    assert value(metrics, "fluxcord_queue_depth") == 4
    depth[0] = 9
    assert value(metrics, "fluxcord_queue_depth") == 9
    assert value(metrics, "fluxcord_active_tasks") == 24


def test_a_failing_gauge_callback_does_not_break_the_scrape() -> None:
    metrics = Metrics(process_metrics=False)

    def broken() -> int:
        raise RuntimeError("engine gone")

    metrics.bind_engine(queue_depth=broken, active_tasks=lambda: 1)
    families = {f.name: f for f in text_string_to_metric_families(metrics.render().decode())}
    assert math.isnan(families["fluxcord_queue_depth"].samples[0].value)
    assert families["fluxcord_active_tasks"].samples[0].value == 1


def test_registries_are_independent_and_not_the_global_one() -> None:
    from prometheus_client import REGISTRY

    first, second = Metrics(), Metrics()
    first.webhook_accepted()
    assert value(first, "fluxcord_webhooks_accepted_total") == 1
    assert value(second, "fluxcord_webhooks_accepted_total") == 0
    assert REGISTRY.get_sample_value("fluxcord_webhooks_accepted_total") is None
    assert b"process_cpu_seconds_total" in first.render() or b"python_gc" in first.render()


def test_render_is_prometheus_text() -> None:
    metrics = Metrics(process_metrics=False)
    metrics.job_state_changed("delivered", "max")
    text = metrics.render().decode()
    assert "# TYPE fluxcord_jobs_total counter" in text
    assert 'fluxcord_jobs_total{state="delivered",variant="max"} 1.0' in text
    assert "# TYPE fluxcord_provider_request_seconds histogram" in text
