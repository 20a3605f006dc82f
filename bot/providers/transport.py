"""The provider clients' HTTP transport: httpx's API over aiohttp's connection pool.

httpcore's pool walks every pooled connection on each request, twice (when the request is
queued and when its connection is released), with a system call per connection to see
whether the peer closed it and a count of idle ones per idle connection. With the BFL
client's fifty-odd connections that was a third of the bot's CPU per delivered job
(bench/discord_load.py: 19 ms → 13 ms per job). aiohttp's connector keeps idle connections
in a per-host list, and the bot already depends on it for Discord. The clients keep httpx's
API, its timeouts and its exceptions.

Two guarantees are kept from the httpcore transport this replaces:

- Connections only go to checked addresses. Names are resolved by `resolve_allowed` (the
  connector's resolver, whose answer the socket is opened to), and an address literal, which
  aiohttp never resolves, is checked before the request.
- httpx's connect errors keep their meaning: ConnectError, ConnectTimeout and PoolTimeout
  only when no byte of the request can have left, so a submit may be retried without paying
  twice (bot/providers/http.py `post_at_most_once`). Any failure after that is a read or
  write error.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager

import aiohttp
import httpx
from aiohttp.abc import AbstractResolver, ResolveResult

from bot.providers.egress import literal_address, resolve_allowed

CHUNK_BYTES = 64 * 1024


class GuardedResolver(AbstractResolver):
    """Every name resolved, every address checked (`resolve_allowed`); a name that does not
    resolve is an OSError, which aiohttp reports as a connect error."""

    def __init__(self, *, allow_loopback: bool) -> None:
        self._allow_loopback = allow_loopback

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        try:
            addresses = await resolve_allowed(host, port, allow_loopback=self._allow_loopback)
        except httpx.ConnectError as exc:  # aiohttp reports an OSError as a connect error
            raise OSError(str(exc)) from None
        return [
            ResolveResult(
                hostname=host,
                host=address,
                port=port,
                family=socket.AF_INET6 if ":" in address else socket.AF_INET,
                proto=0,
                flags=socket.AI_NUMERICHOST | socket.AI_NUMERICSERV,
            )
            for address in addresses
        ]

    async def close(self) -> None:
        return None


@contextmanager
def _as_httpx_errors(request: httpx.Request) -> Iterator[None]:
    """aiohttp's errors as the httpx ones the clients handle. Only a failure to get a
    connection is a connect error; once one is held the request may have left, so anything
    else is a read error (a billed request is then never sent again)."""
    try:
        yield
    except aiohttp.ConnectionTimeoutError as exc:  # waiting for a pooled or new connection
        raise httpx.ConnectTimeout(str(exc), request=request) from exc
    except aiohttp.ClientConnectorError as exc:  # refused, unresolvable, TLS handshake
        raise httpx.ConnectError(str(exc), request=request) from exc
    except TimeoutError as exc:  # sock_read (aiohttp's SocketTimeoutError is one)
        raise httpx.ReadTimeout(str(exc) or "timed out", request=request) from exc
    except aiohttp.InvalidURL as exc:
        raise httpx.UnsupportedProtocol(str(exc), request=request) from exc
    except (aiohttp.ClientError, OSError) as exc:  # dropped, reset, a malformed answer
        raise httpx.ReadError(str(exc) or type(exc).__name__, request=request) from exc


class _Body(httpx.AsyncByteStream):
    def __init__(self, response: aiohttp.ClientResponse, request: httpx.Request) -> None:
        self._response = response
        self._request = request

    async def __aiter__(self) -> AsyncIterator[bytes]:
        with _as_httpx_errors(self._request):
            async for chunk in self._response.content.iter_chunked(CHUNK_BYTES):
                yield chunk

    async def aclose(self) -> None:
        self._response.release()


class GuardedAiohttpTransport(httpx.AsyncBaseTransport):
    """One aiohttp session (one pool) per provider client, made on first use (a session
    belongs to the running loop)."""

    def __init__(self, *, limits: httpx.Limits, allow_loopback: bool) -> None:
        self._limits = limits
        self._allow_loopback = allow_loopback
        self._session: aiohttp.ClientSession | None = None
        # The same trust as httpx's default: certifi's roots, not the system's.
        self._ssl = httpx.create_ssl_context()

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(
                limit=self._limits.max_connections or 0,
                limit_per_host=0,
                keepalive_timeout=self._limits.keepalive_expiry or 5.0,
                resolver=GuardedResolver(allow_loopback=self._allow_loopback),
                ssl=self._ssl,
            )
            # No proxies or netrc from the environment: a proxy would connect where we cannot
            # check. Cookies are never kept between provider calls.
            self._session = aiohttp.ClientSession(
                connector=connector,
                trust_env=False,
                cookie_jar=aiohttp.DummyCookieJar(),
                auto_decompress=False,  # httpx decodes, by the response's headers
            )
        return self._session

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        host = request.url.host
        if literal_address(host) is not None:  # never resolved, so never checked on the way
            await resolve_allowed(host, request.url.port or 0, allow_loopback=self._allow_loopback)
        timeouts = request.extensions.get("timeout", {})
        # aiohttp has no write timeout: bound the whole exchange by the sum of the phases'
        # (pool, connect, write, read), so an upload the peer stops reading cannot hang.
        phases = [timeouts.get(phase) for phase in ("pool", "connect", "write", "read")]
        total = None if None in phases else sum(phases)
        session = self._open()
        body = request.content or None  # httpx has read the body: clients send bytes or JSON
        with _as_httpx_errors(request):
            response = await session.request(
                request.method,
                str(request.url),
                headers=list(request.headers.multi_items()),
                data=body,
                allow_redirects=False,
                compress=None,
                timeout=aiohttp.ClientTimeout(
                    total=total,
                    connect=timeouts.get("pool"),
                    sock_connect=timeouts.get("connect"),
                    sock_read=timeouts.get("read"),
                ),
                skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type"),
            )
        return httpx.Response(
            status_code=response.status,
            headers=response.raw_headers,
            stream=_Body(response, request),
            request=request,
            extensions={"http_version": b"HTTP/1.1"},
        )

    async def aclose(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()


def guarded_client(
    *, timeout: httpx.Timeout, limits: httpx.Limits, allow_loopback: bool
) -> httpx.AsyncClient:
    """The shared client of a provider: guarded connections, no redirects followed for it
    (downloads follow same-host redirects themselves), no proxies or netrc from the
    environment (a proxy would connect where we cannot check)."""
    return httpx.AsyncClient(
        timeout=timeout,
        transport=GuardedAiohttpTransport(limits=limits, allow_loopback=allow_loopback),
        headers={"accept": "application/json", "user-agent": "Fluxcord (discord bot)"},
        follow_redirects=False,
        trust_env=False,
    )
