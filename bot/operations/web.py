"""The bot's own HTTP server: BFL webhooks, `/livez`, `/readyz` (`/healthz`) and `/metrics`.

Routes
------
``POST /webhooks/bfl/{job_id}``
    A BFL webhook delivery (only when a `WebhookTarget` is given, i.e. when
    ``WEBHOOK_PUBLIC_URL`` is set). The job id is in the path, the task id only in the body:
    the webhook URL is sent with the submit, before the task id exists, so the job id is the
    only id a per-job URL can carry. That also lets a delivery be verified when it beats the
    engine's write of the submit answer (a fast task, or a slow database): the job and its
    secret exist before the submit is sent. The path is ``<job id>_<tag>`` (bot/jobs/webhooks.py)
    and only names a job; the per-job secret is what authenticates.

    Order of checks, each ending the request with no side effect:
    size (413, by Content-Length before reading, then by a capped read) → job known (404;
    an id without the fleet's tag, which only the URLs the bot gave BFL carry, is refused
    from memory, without a database read: job ids alone are public, in every button) →
    authenticated (401: ``X-Webhook-Secret`` equal to the job's secret, or
    ``X-BFL-Signature: sha256=<hex HMAC-SHA256 of the raw body>``, both compared in constant
    time) → JSON body with a task id (400) → task id is the job's (404) → handed over (200).
    Deduplication is the target's job: a verified duplicate is handed over again.
    Rejections are counted in the metrics every time but logged at most once a minute per
    reason (with the number held back): anyone can send them.
``GET /livez``
    200 whenever the process and its event loop answer (this handler runs on the loop):
    ``{"status": "ok", "service": "fluxcord", "version", "event_loop_lag_seconds"}``. For
    a container's HEALTHCHECK: restart the bot when it stops answering, not when a provider
    or Discord is down. ``fluxcord doctor`` reads ``service`` to know a Fluxcord answered.
``GET /webhooks/bfl/livez``
    The same as ``/livez``, only with the webhook receiver on: the path a reverse proxy
    already forwards, so ``fluxcord doctor`` can check WEBHOOK_PUBLIC_URL end to end.
``GET /readyz`` (and ``GET /healthz``, its older name)
    200 when every Discord shard this process runs is connected, the database answers and
    every configured provider has a key that is not known to be bad (rejected, or an
    account with no credits); 503 otherwise. JSON: ``status`` ("ok" or "unhealthy"),
    ``version``, ``checks`` (database, discord, and providers when any is configured),
    ``providers`` (per provider: ``usable`` and each key's ``key`` position, ``setting``,
    ``state`` and ``credits``) and the queue depth. No secrets, no error texts.
``GET /metrics``
    Prometheus text format from the `Metrics` registry. Private by default: with no
    ``METRICS_TOKEN`` it answers loopback peers only (403 otherwise); with one, any peer
    that sends ``Authorization: Bearer <token>`` (401 otherwise). The metrics name servers,
    keys' positions and balances: not for the public internet.

Expose only ``/webhooks/bfl/`` publicly (see the README); health and metrics are for the
operator.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

from aiohttp import web

from bot.jobs.webhooks import WEBHOOK_PATH, WebhookTarget, verify_webhook, webhook_task_result
from bot.operations.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from bot.operations.metrics import Metrics, WebhookRejection
from bot.operations.metrics_access import MetricsAccess
from bot.storage.outage import is_outage
from bot.version import __version__

log = logging.getLogger(__name__)

# A finished-task payload is ~1 KB; 64 KiB leaves room for verbose `details` and nothing more.
DEFAULT_MAX_WEBHOOK_BYTES = 64 * 1024
# Job ids are 16 hex digits today; the pattern leaves room but keeps paths (and so access-log
# lines) to a harmless alphabet.
_JOB_ID = r"[A-Za-z0-9_-]{1,64}"
PUBLIC_LIVEZ_PATH = f"{WEBHOOK_PATH}/livez"
# What `/livez` calls itself: how `fluxcord doctor` knows a Fluxcord answered at a URL.
SERVICE_NAME = "fluxcord"
# The access log: no headers (an X-Webhook-Secret must never be logged), no user agent.
ACCESS_LOG_FORMAT = '%a "%r" %s %b %Tf'


# Unauthenticated requests can come by the thousand: one WARNING line per reason per interval.
REJECTION_LOG_INTERVAL = 60.0


class ThrottledWarnings:
    """At most one WARNING per key per `interval`; the next line that gets through says how
    many were held back. The metrics still count every one."""

    def __init__(
        self,
        logger: logging.Logger,
        interval: float = REJECTION_LOG_INTERVAL,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._log = logger
        self._interval = interval
        self._clock = clock
        self._last: dict[str, float] = {}
        self._held_back: dict[str, int] = {}

    def warning(self, key: str, message: str, *args: object) -> None:
        now = self._clock()
        last = self._last.get(key)
        if last is not None and now - last < self._interval:
            self._held_back[key] = self._held_back.get(key, 0) + 1
            return
        self._last[key] = now
        held = self._held_back.pop(key, 0)
        if held:
            self._log.warning(
                message + " (and %d more like it in the last %.0f s)",
                *args,
                held,
                self._interval if last is None else now - last,
            )
        else:
            self._log.warning(message, *args)


@dataclass(frozen=True)
class HealthChecks:
    """What `/readyz` asks. `ping_database` runs `SELECT 1` (raises or hangs when broken);
    `providers` reports each configured provider (`AccountMonitor.report`: `usable` and its
    keys); `loop_lag` is shown by `/livez`."""

    ping_database: Callable[[], Awaitable[object]]
    discord_connected: Callable[[], bool]
    queue_depth: Callable[[], int]
    timeout: float = 2.0
    providers: Callable[[], Mapping[str, Mapping[str, Any]]] | None = None
    loop_lag: Callable[[], float] | None = None


# --------------------------------------------------------------------------- the application
def create_app(
    *,
    metrics: Metrics,
    health: HealthChecks,
    webhook_target: WebhookTarget | None = None,
    max_webhook_bytes: int = DEFAULT_MAX_WEBHOOK_BYTES,
    rejection_log_interval: float = REJECTION_LOG_INTERVAL,
    metrics_token: str | None = None,
) -> web.Application:
    """The bot's web application. Without a `webhook_target` there is no webhook route (the
    receiver is off and polling alone delivers)."""
    if max_webhook_bytes <= 0:
        raise ValueError("max_webhook_bytes must be positive")
    # client_max_size caps any body aiohttp reads for us (request.read/json/post) as a second
    # guard; the webhook handler does its own capped read.
    app = web.Application(client_max_size=max_webhook_bytes)
    routes = _Routes(
        metrics,
        health,
        webhook_target,
        max_webhook_bytes,
        ThrottledWarnings(log, rejection_log_interval),
        MetricsAccess(metrics_token),
    )
    app.router.add_get("/livez", routes.livez, allow_head=True)
    app.router.add_get("/readyz", routes.readyz, allow_head=True)
    app.router.add_get("/healthz", routes.readyz, allow_head=True)  # before /readyz existed
    app.router.add_get("/metrics", routes.metrics)
    if webhook_target is not None:
        app.router.add_post(f"{WEBHOOK_PATH}/{{job_id:{_JOB_ID}}}", routes.webhook)
        # /livez under the one public prefix: `fluxcord doctor` proves WEBHOOK_PUBLIC_URL
        # reaches a Fluxcord through the same proxy rule BFL's deliveries take.
        app.router.add_get(PUBLIC_LIVEZ_PATH, routes.livez, allow_head=True)
    return app


class _BodyTooLarge(Exception):
    pass


class _Routes:
    def __init__(
        self,
        metrics: Metrics,
        health: HealthChecks,
        target: WebhookTarget | None,
        max_webhook_bytes: int,
        rejections: ThrottledWarnings,
        metrics_access: MetricsAccess,
    ) -> None:
        self._metrics = metrics
        self._metrics_access = metrics_access
        self._rejections = rejections
        self._health = health
        self._target = target
        self._max_bytes = max_webhook_bytes
        # A database ping still running from an earlier /healthz. While one hangs, new
        # requests report a timeout instead of piling more statements onto the connection.
        self._ping: asyncio.Task[object] | None = None

    # ----------------------------------------------------------------- webhooks
    async def webhook(self, request: web.Request) -> web.Response:
        job_id = request.match_info["job_id"]
        declared = request.content_length
        if declared is not None and declared > self._max_bytes:
            return self._too_large(job_id)
        try:
            raw = await self._read_capped(request)
        except _BodyTooLarge:
            return self._too_large(job_id)

        assert self._target is not None  # the route exists only with a target
        try:
            subscription = await self._target.webhook_subscription(job_id)
        except Exception as exc:
            # A database hiccup: 5xx so BFL may retry; polling follows the job meanwhile.
            return _failed_to_take(job_id, exc, "looking the job up failed")
        if subscription is None:
            return self._reject(job_id, WebhookRejection.UNKNOWN_TASK, HTTPStatus.NOT_FOUND)
        if subscription.secret is None:
            # The job has ended and its secret went with it: nothing can be verified, and
            # nothing is read or changed. 200 all the same, so BFL does not retry a late
            # duplicate (a 4xx might be retried: BFL does not document its retries).
            return web.json_response({"ok": True})
        if not verify_webhook(raw, request.headers, subscription.secret):
            return self._reject(job_id, WebhookRejection.BAD_SECRET, HTTPStatus.UNAUTHORIZED)

        # Verified from here on: the body is BFL's, but its format is undocumented.
        payload = _json_object(raw)
        task_id = _task_id(payload) if payload is not None else None
        if payload is not None and task_id is None and not _has_task_id(payload):
            task_id = subscription.task_id  # no id in the body: the job's URL and secret name it
        if payload is None or task_id is None:
            return self._reject(job_id, WebhookRejection.BAD_BODY, HTTPStatus.BAD_REQUEST)
        if subscription.task_id is not None and task_id != subscription.task_id:
            return self._reject(job_id, WebhookRejection.UNKNOWN_TASK, HTTPStatus.NOT_FOUND)

        result = webhook_task_result(payload)
        try:
            await self._target.webhook_result(job_id, task_id, result)
        except Exception as exc:
            # The job is safe either way: polling still follows it. A 5xx lets BFL retry.
            return _failed_to_take(job_id, exc, "the engine failed to take it")
        self._metrics.webhook_accepted()
        log.info("webhook for job %s accepted: %s", job_id, result.outcome.value)
        return web.json_response({"ok": True})

    async def _read_capped(self, request: web.Request) -> bytes:
        """The body, read chunk by chunk; stops as soon as it passes the cap (chunked
        uploads have no Content-Length to check up front)."""
        body = bytearray()
        async for chunk in request.content.iter_any():
            body.extend(chunk)
            if len(body) > self._max_bytes:
                raise _BodyTooLarge
        return bytes(body)

    def _too_large(self, job_id: str) -> web.Response:
        response = self._reject(
            job_id, WebhookRejection.TOO_LARGE, HTTPStatus.REQUEST_ENTITY_TOO_LARGE
        )
        # Do not reuse the connection: the rest of the body was never read (aiohttp discards
        # what still arrives for a short while, so the client gets to see this answer).
        response.force_close()
        return response

    def _reject(self, job_id: str, reason: WebhookRejection, status: HTTPStatus) -> web.Response:
        self._metrics.webhook_rejected(reason)
        # The job id and the reason only: never headers or the body. Throttled: anyone can
        # send these, and each must not cost a log line.
        self._rejections.warning(
            reason.value, "webhook for job %s rejected: %s", job_id, reason.value
        )
        return _plain(status)

    # ----------------------------------------------------------------- health
    async def livez(self, request: web.Request) -> web.Response:
        lag = None if self._health.loop_lag is None else self._health.loop_lag()
        return livez_response(lag)

    async def readyz(self, request: web.Request) -> web.Response:
        checks = {"database": await self._database_check(), "discord": self._discord_check()}
        providers = self._providers()
        if providers is not None:
            checks["providers"] = (
                "ok" if all(entry.get("usable") for entry in providers.values()) else "unusable"
            )
        try:
            depth: int | None = int(self._health.queue_depth())
        except Exception:
            log.warning("health check: reading the queue depth failed", exc_info=True)
            depth = None
        healthy = all(value == "ok" for value in checks.values())
        body: dict[str, Any] = {
            "status": "ok" if healthy else "unhealthy",
            "version": __version__,
            "checks": checks,
            "queue_depth": depth,
        }
        if providers is not None:
            body["providers"] = providers
        return web.json_response(
            body, status=200 if healthy else 503, headers={"Cache-Control": "no-store"}
        )

    def _providers(self) -> Mapping[str, Mapping[str, Any]] | None:
        """Each configured provider's report, or None when none is configured."""
        if self._health.providers is None:
            return None
        try:
            report = self._health.providers()
        except Exception:
            log.warning("health check: reading the provider keys failed", exc_info=True)
            return {"unknown": {"usable": False, "keys": []}}
        return report or None

    async def _database_check(self) -> str:
        if self._ping is None or self._ping.done():
            try:
                self._ping = asyncio.ensure_future(self._health.ping_database())
            except Exception:  # e.g. the database object is not there yet
                log.warning("health check: cannot ping the database", exc_info=True)
                return "error"
            self._ping.add_done_callback(_consume_ping)
        # asyncio.wait does not cancel on timeout: a statement cancelled half-way on the
        # shared aiosqlite connection is worse than one left to finish.
        done, _ = await asyncio.wait({self._ping}, timeout=self._health.timeout)
        if not done:
            return "timeout"
        if self._ping.cancelled() or self._ping.exception() is not None:
            return "error"
        return "ok"

    def _discord_check(self) -> str:
        try:
            connected = bool(self._health.discord_connected())
        except Exception:
            log.warning("health check: reading the Discord connection failed", exc_info=True)
            connected = False
        return "ok" if connected else "disconnected"

    # ----------------------------------------------------------------- metrics
    async def metrics(self, request: web.Request) -> web.Response:
        refusal = self._metrics_access.refusal(request)
        if refusal is not None:
            return refusal
        return web.Response(
            body=self._metrics.render(), headers={"Content-Type": METRICS_CONTENT_TYPE}
        )


def livez_response(loop_lag: float | None = None) -> web.Response:
    """`/livez`'s answer: it says a Fluxcord answered, which version, and how late its loop
    runs (`fluxcord doctor` serves the same while it checks WEBHOOK_PUBLIC_URL)."""
    body = {
        "status": "ok",
        "service": SERVICE_NAME,
        "version": __version__,
        "event_loop_lag_seconds": None if loop_lag is None else round(loop_lag, 3),
    }
    return web.json_response(body, headers={"Cache-Control": "no-store"})


def _consume_ping(task: asyncio.Task[object]) -> None:
    """Log a failed database ping once (without it asyncio warns the error was never seen)."""
    if not task.cancelled() and (error := task.exception()) is not None:
        log.warning("health check: database ping failed: %s", type(error).__name__)


def _failed_to_take(job_id: str, exc: Exception, what: str) -> web.Response:
    """A webhook we could not take now. During a database outage that is expected (the store
    has logged the outage once): 503, and the job's poll finishes it."""
    if is_outage(exc):
        log.info("webhook for job %s: the database is unreachable; polling will finish it", job_id)
        return _plain(HTTPStatus.SERVICE_UNAVAILABLE)
    log.error("webhook for job %s: %s", job_id, what, exc_info=exc)
    return _plain(HTTPStatus.INTERNAL_SERVER_ERROR)


def _plain(status: HTTPStatus) -> web.Response:
    """A short text answer such as "401: Unauthorized" — nothing about the job or its secret."""
    return web.Response(status=status.value, text=f"{status.value}: {status.phrase}")


def _json_object(raw: bytes) -> dict[str, Any] | None:
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):  # bad JSON, bad UTF-8, absurd nesting
        return None
    return data if isinstance(data, dict) else None


def _has_task_id(payload: Mapping[str, Any]) -> bool:
    return "id" in payload or "task_id" in payload


def _task_id(payload: Mapping[str, Any]) -> str | None:
    """`id` or `task_id` (both appear in the wild); None when absent, malformed or when the
    two disagree."""
    found = {
        value for key in ("id", "task_id") if isinstance(value := payload.get(key), str) and value
    }
    return found.pop() if len(found) == 1 else None


# --------------------------------------------------------------------------- the server
class WebServer:
    """Runs an application on `host:port` inside the bot's event loop."""

    def __init__(
        self, app: web.Application, host: str, port: int, *, shutdown_timeout: float = 5.0
    ) -> None:
        self._app = app
        self._host = host
        self._port = port
        self._shutdown_timeout = shutdown_timeout
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        if self._runner is not None:
            raise RuntimeError("the web server is already running")
        runner = web.AppRunner(
            self._app,
            access_log_format=ACCESS_LOG_FORMAT,
            # discord.py and the bot own the process's signals.
            handle_signals=False,
            shutdown_timeout=self._shutdown_timeout,
        )
        await runner.setup()
        try:
            await web.TCPSite(runner, self._host, self._port).start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        log.info("web server listening on %s", self.url)

    async def stop(self) -> None:
        """Stop listening and let requests in flight finish (up to the shutdown timeout)."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    @property
    def port(self) -> int:
        """The bound port (useful with port 0, which picks a free one)."""
        if self._runner is None or not self._runner.addresses:
            raise RuntimeError("the web server is not running")
        address: tuple[Any, ...] = self._runner.addresses[0]
        return int(address[1])

    @property
    def url(self) -> str:
        """``http://host:port`` of the local listener (not the public webhook URL)."""
        host = self._host or "0.0.0.0"
        if _is_ipv6(host):
            host = f"[{host}]"
        return f"http://{host}:{self.port}"


def _is_ipv6(host: str) -> bool:
    try:
        socket.inet_pton(socket.AF_INET6, host)
    except OSError:
        return False
    return True
