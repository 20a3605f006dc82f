"""Where the provider clients may connect, and which hosts may see an API key.

Provider answers carry URLs that come from the network (BFL's `polling_url` and result links,
the AI/ML API's result links). Nothing in them is trusted:

* an API key goes only over https, on the default port, to the configured API host or one of
  BFL's documented API hosts (`api.bfl.ai`, `api.eu.bfl.ai`, `api.us.bfl.ai` and regional
  clusters such as `api.eu2.bfl.ai` that a `polling_url` may name);
* no connection goes to a non-global address (loopback, private, link-local, CGNAT,
  multicast, reserved, unspecified, IPv6 ULA/link-local, and IPv4 addresses hidden in IPv6
  forms): every address a hostname resolves to is checked (with `loop.getaddrinfo`, off the
  event loop), and the connection is then made *to the checked address* by the transport's
  resolver (bot/providers/transport.py), so a DNS answer that changes between the check and
  the connect (rebinding) cannot slip by;
* TLS still verifies the certificate for the URL's hostname (aiohttp passes it as SNI).

A link that does not parse (`https://[zz]/x` makes `urlsplit` raise), or that `urlsplit` and
httpx (which makes the request) read as different hosts or ports, is refused like any other
untrusted link: `split_provider_url`.

The stand-ins used by the tests live on 127.0.0.1: `allow_loopback` (the test-only setting
`ALLOW_LOOPBACK_PROVIDER_URLS`) admits loopback addresses and plain http, and nothing else: the
key still goes only to the configured API base's host and port (so a test can show that a
`polling_url` on another loopback port never gets it). It never admits private or link-local
addresses.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import re
import socket
from collections.abc import Iterable
from typing import Final
from urllib.parse import SplitResult, urlsplit

import httpx

from bot.errors import ResultUnavailable

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# BFL's documented API hosts (reference: "Auth and hosts").
BFL_API_HOSTS: Final = frozenset({"api.bfl.ai", "api.eu.bfl.ai", "api.us.bfl.ai"})
# A `polling_url` may point at another cluster, e.g. api.eu2.bfl.ai: a region code and an
# optional number. Delivery hosts (delivery-eu1.bfl.ai) never match: they must not see a key.
_BFL_REGIONAL_API_HOST: Final = re.compile(r"api\.[a-z]{2}[0-9]{0,2}\.bfl\.ai")
_NAT64: Final = ipaddress.IPv6Network("64:ff9b::/96")
_LOOPBACK_NAMES: Final = frozenset({"localhost", "localhost.localdomain"})
_DEFAULT_PORTS: Final = {"https": 443, "http": 80}


class UnsafeProviderURL(ResultUnavailable):
    """A provider answer pointed somewhere the bot will not go (a private address, plain
    http, another port, a redirect to another host). Nothing was fetched from there. Never
    retried: the same answer would point there again."""

    user_message = (
        "The image service answered with a link the bot does not trust, so it was not "
        "followed. You were not charged."
    )


def split_provider_url(url: str) -> SplitResult:
    """`url` split, or UnsafeProviderURL when it is malformed: `urlsplit` raises a bare
    ValueError for some (`https://[zz]/x`, a port out of range), httpx for others (control
    characters, bad IDNA), and a link the two read as different hosts or ports could be
    checked for one destination and sent to another."""
    parts = _split_checked(url)
    if isinstance(parts, str):
        raise UnsafeProviderURL(parts)
    return parts


# A task's links are checked at its submit, at every poll and before the download, and
# httpx's parser walks the whole link character by character: remembered, that was a tenth
# of the bot's CPU per job (bench/discord_load.py). A pure function of the string.
@functools.lru_cache(maxsize=4096)
def _split_checked(url: str) -> SplitResult | str:
    """The split link, or why it is refused."""
    try:
        parts = urlsplit(url)
        port = parts.port
        sent_to = httpx.URL(url)
    except (ValueError, httpx.InvalidURL):
        return "a provider link is malformed"
    checked = (parts.scheme.lower(), (parts.hostname or "").lower(), _with_default(port, parts))
    actual = (sent_to.scheme, sent_to.host.lower(), _with_default(sent_to.port, parts))
    if checked != actual:
        return "a provider link reads as two different destinations"
    return parts


def _with_default(port: int | None, parts: SplitResult) -> int | None:
    return port if port is not None else _DEFAULT_PORTS.get(parts.scheme.lower())


def link_host(url: str) -> str:
    """The host of a provider link for a log line ("a malformed link" when it has none)."""
    try:
        return split_provider_url(url).hostname or "no host"
    except UnsafeProviderURL:
        return "a malformed link"


def is_bfl_api_host(host: str) -> bool:
    host = host.lower().rstrip(".")
    return host in BFL_API_HOSTS or _BFL_REGIONAL_API_HOST.fullmatch(host) is not None


def address_allowed(address: IPAddress, *, allow_loopback: bool = False) -> bool:
    """True only for a globally routable unicast address (or loopback, when allowed)."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = address.ipv4_mapped or address.sixtofour
        if embedded is None and address.teredo is not None:
            embedded = address.teredo[1]
        if embedded is None and address in _NAT64:
            embedded = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if embedded is not None:
            return address_allowed(embedded, allow_loopback=allow_loopback)
        if address.is_site_local:
            return False
    if address.is_loopback:
        return allow_loopback
    return address.is_global and not (
        address.is_private
        or address.is_multicast
        or address.is_reserved
        or address.is_unspecified
        or address.is_link_local
    )


@functools.lru_cache(maxsize=1024)  # asked for every request's host: a pure function
def literal_address(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host.strip("[]").partition("%")[0])
    except ValueError:
        return None


def is_loopback_host(host: str) -> bool:
    """A loopback IP literal or the name localhost (for the test-only loopback setting)."""
    literal = literal_address(host)
    if literal is not None:
        return literal.is_loopback
    return host.lower().rstrip(".") in _LOOPBACK_NAMES


async def resolve_allowed(host: str, port: int, *, allow_loopback: bool = False) -> list[str]:
    """The addresses `host` resolves to, every one checked; raises UnsafeProviderURL if any is
    not allowed (a name that also resolves to a private address is refused, not filtered:
    which address a later lookup returns is the attacker's choice), httpx.ConnectError when
    it does not resolve."""
    literal = literal_address(host)
    if literal is not None:
        candidates: Iterable[str] = [str(literal)]
    else:
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (socket.gaierror, UnicodeError) as exc:
            raise httpx.ConnectError(f"cannot resolve {host}: {exc}") from None
        candidates = dict.fromkeys(str(info[4][0]) for info in infos)
    addresses: list[str] = []
    for text in candidates:
        address = literal_address(text)
        if address is None or not address_allowed(address, allow_loopback=allow_loopback):
            raise UnsafeProviderURL(f"{host} resolves to a non-public address ({text})")
        addresses.append(str(address))
    if not addresses:
        raise httpx.ConnectError(f"{host} has no address")
    return addresses


def _port(parts: SplitResult) -> int | None:
    try:
        return parts.port
    except ValueError:
        return -1


class EgressPolicy:
    """The rules for one provider: its configured API base, and the loopback test switch."""

    def __init__(self, api_base: str, *, allow_loopback: bool = False, bfl: bool = False) -> None:
        self.allow_loopback = allow_loopback
        self._bfl = bfl
        try:
            base = split_provider_url(api_base)
        except UnsafeProviderURL:
            raise ValueError("the API base is not a valid URL") from None
        self._base_host = (base.hostname or "").lower()
        self._base_port = _effective_port(base)
        problem = self._key_problem(base)
        if problem is not None:
            raise ValueError(f"the API base {problem}")

    def _key_problem(self, parts: SplitResult) -> str | None:
        host = (parts.hostname or "").lower()
        if not host or parts.username is not None or parts.password is not None:
            return "has no host (or carries a user name)"
        if self.allow_loopback and is_loopback_host(host):
            return None  # the loopback stand-ins of the tests, over http on their own ports
        if parts.scheme != "https":
            return "is not https"
        if _port(parts) not in (None, 443):
            return "is not on the default https port"
        return None

    def may_receive_key(self, url: str) -> bool:
        """Only over https, default port, to the configured API host or a documented BFL API
        host. The test switch relaxes https and the port for loopback hosts, and nothing
        else: the key still goes only to the configured base's own host and port."""
        try:
            parts = split_provider_url(url)
        except UnsafeProviderURL:
            return False
        if self._key_problem(parts) is not None:
            return False
        host = (parts.hostname or "").lower()
        if host == self._base_host and _effective_port(parts) == self._base_port:
            return True
        return self._bfl and is_bfl_api_host(host)

    def require_key_destination(self, url: str, key_name: str) -> None:
        """Raise UnsafeProviderURL unless `key_name` may go to `url` (`may_receive_key`).
        Callers only build requests to trusted hosts; this is the last line."""
        if not self.may_receive_key(url):
            raise UnsafeProviderURL(f"refusing to send {key_name} to {link_host(url)}")

    def check_fetch_url(self, url: str) -> SplitResult:
        """A result link: well-formed, https on the default port (plain http and any port
        only to loopback under the test switch), no user name. Raises UnsafeProviderURL."""
        parts = split_provider_url(url)
        if parts.scheme not in ("http", "https"):
            raise UnsafeProviderURL("result link is not http(s)")
        host = (parts.hostname or "").lower()
        if not host or parts.username is not None or parts.password is not None:
            raise UnsafeProviderURL("result link has no host, or carries a user name")
        if self.allow_loopback and is_loopback_host(host):
            return parts
        if parts.scheme != "https":
            raise UnsafeProviderURL(f"link to {host} is not https")
        if _port(parts) not in (None, 443):
            raise UnsafeProviderURL(f"link to {host} is not on the default https port")
        return parts

    async def check_addresses(self, url: str) -> None:
        """Resolve the URL's host and refuse it when any address is not public. The guarded
        transport checks again at connect time; this check also covers injected clients and
        fails before anything is sent."""
        parts = split_provider_url(url)
        port = _effective_port(parts) or 443
        await resolve_allowed(parts.hostname or "", port, allow_loopback=self.allow_loopback)

    async def check_fetch(self, url: str) -> None:
        self.check_fetch_url(url)
        await self.check_addresses(url)


def same_host(first: str, second: str) -> bool:
    """Same scheme-independent host and effective port (a redirect may go http → https on
    loopback in tests; elsewhere both are https already). Raises UnsafeProviderURL for a
    malformed link."""
    a, b = split_provider_url(first), split_provider_url(second)
    return (a.hostname or "").lower() == (b.hostname or "").lower() and _effective_port(
        a
    ) == _effective_port(b)


def _effective_port(parts: SplitResult) -> int | None:
    return _with_default(_port(parts), parts)
