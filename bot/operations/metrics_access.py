"""Who may read `/metrics`. The metrics show spend, balances and load: private unless the
operator says otherwise (bot/operations/web.py serves them)."""

from __future__ import annotations

import hmac
import ipaddress
from http import HTTPStatus

from aiohttp import web


class MetricsAccess:
    """Who may read `/metrics`: loopback peers, or anyone with the token when one is set."""

    def __init__(self, token: str | None) -> None:
        self._token = None if token is None else token.encode()

    def refusal(self, request: web.Request) -> web.Response | None:
        if self._token is None:
            if is_loopback(request.remote):
                return None
            return refused(
                HTTPStatus.FORBIDDEN,
                "/metrics answers this machine only: set METRICS_TOKEN to scrape it from "
                "elsewhere (docs/operations.md)",
            )
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), self._token):
            return None
        response = refused(
            HTTPStatus.UNAUTHORIZED, "/metrics needs Authorization: Bearer <METRICS_TOKEN>"
        )
        response.headers["WWW-Authenticate"] = 'Bearer realm="fluxcord-metrics"'
        return response


def is_loopback(address: str | None) -> bool:
    if address is None:  # a Unix socket: only this machine can reach it
        return True
    try:
        ip = ipaddress.ip_address(address.partition("%")[0])
    except ValueError:
        return False
    # A dual-stack socket shows an IPv4 peer as ::ffff:127.0.0.1, which is not "loopback".
    mapped = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else None
    return (mapped or ip).is_loopback


def refused(status: HTTPStatus, why: str) -> web.Response:
    return web.Response(status=status.value, text=f"{status.value}: {why}")
