"""`/metrics` is private by default: loopback peers only, or anyone with METRICS_TOKEN.

Served for real on 0.0.0.0 and asked through this machine's own non-loopback address, as a
Prometheus in another container or on another host would."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Callable

import httpx
import pytest

from bot.operations.metrics import Metrics
from bot.operations.metrics_access import is_loopback
from bot.operations.web import HealthChecks, WebServer, create_app

TOKEN = "metrics-token-for-the-test-123"


def outward_address() -> str | None:
    """This machine's address on its default route (no packet is sent), if it has one."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("10.255.255.255", 1))
        except OSError:
            return None
        address = str(probe.getsockname()[0])
    return None if address.startswith("127.") or address == "0.0.0.0" else address


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[str | None], object]]:
    servers: list[WebServer] = []

    async def start(token: str | None) -> WebServer:
        async def ping() -> object:
            return 1

        app = create_app(
            metrics=Metrics(),
            health=HealthChecks(
                ping_database=ping, discord_connected=lambda: True, queue_depth=lambda: 0
            ),
            metrics_token=token,
        )
        server = WebServer(app, "0.0.0.0", 0, shutdown_timeout=1.0)
        await server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        await server.stop()


async def get(host: str, server: WebServer, path: str, **headers: str) -> httpx.Response:
    async with httpx.AsyncClient() as client:
        return await client.get(f"http://{host}:{server.port}{path}", headers=headers)


async def test_without_a_token_only_this_machine_reads_the_metrics(serve: object) -> None:
    server = await serve(None)  # type: ignore[operator]
    local = await get("127.0.0.1", server, "/metrics")
    assert local.status_code == 200 and "fluxcord_" in local.text
    address = outward_address()
    if address is None:
        pytest.skip("this machine has no non-loopback address to ask from")
    outside = await get(address, server, "/metrics")
    assert outside.status_code == 403
    assert "set METRICS_TOKEN" in outside.text and "fluxcord_" not in outside.text
    # Liveness stays open to the container runtime and the proxy.
    assert (await get(address, server, "/livez")).status_code == 200


async def test_with_a_token_anyone_who_sends_it_reads_the_metrics(serve: object) -> None:
    server = await serve(TOKEN)  # type: ignore[operator]
    host = outward_address() or "127.0.0.1"
    missing = await get(host, server, "/metrics")
    assert missing.status_code == 401
    assert missing.headers["WWW-Authenticate"].startswith("Bearer")
    assert TOKEN not in missing.text
    wrong = await get(host, server, "/metrics", Authorization=f"Bearer {TOKEN}x")
    assert wrong.status_code == 401
    # With a token set, loopback needs it too: one rule, whoever asks.
    assert (await get("127.0.0.1", server, "/metrics")).status_code == 401
    right = await get(host, server, "/metrics", Authorization=f"Bearer {TOKEN}")
    assert right.status_code == 200 and "fluxcord_" in right.text


def test_loopback_peers_are_recognised_in_every_spelling() -> None:
    assert all(map(is_loopback, ["127.0.0.1", "127.8.9.10", "::1", "::ffff:127.0.0.1", None]))
    assert not any(map(is_loopback, ["192.0.2.2", "::ffff:192.0.2.2", "fd00::2", "garbage"]))
