"""Nothing a provider says is trusted: the stand-ins hand out hostile links, bodies and costs.

Every scenario checks what a member or operator would notice (the job's end, its message,
the ledger row) and that nothing was fetched from the hostile address: each TCP connection
the process opens is recorded, and the stand-in records the Host of every request it gets.
"""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import math
import socket
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from aiohttp import web
from PIL import ImageFile

from bot.catalogue import get_variant
from bot.errors import (
    AnswerTooLarge,
    InvalidCharge,
    ResultTooLarge,
    ResultUnavailable,
    SettingsError,
)
from bot.jobs.engine import JobEngine
from bot.jobs.models import JobState
from bot.ledger.policy import credits_to_mc
from bot.providers.aiml import AIMLClient
from bot.providers.aiml_payload import build_payload
from bot.providers.base import OutputImage, reported_number, result_pixel_limit, sane_cost
from bot.providers.bfl import BFLClient
from bot.providers.egress import (
    EgressPolicy,
    UnsafeProviderURL,
    address_allowed,
    link_host,
    resolve_allowed,
    same_host,
)
from bot.providers.http import UntrustedResultSize, output_image
from bot.providers.transport import guarded_client
from bot.settings import load_settings
from bot.storage.db import Database
from tests.conftest import BFL_KEY, FAST_POLLING, EngineFactory, make_request
from tests.fakes.aiml_server import FakeAIML, Fault
from tests.fakes.bfl_server import FakeBFL, huge_png
from tests.fakes.common import serve_on_loopback
from tests.fakes.notifier import RecordingNotifier
from tests.integration.test_engine import png

UNTRUSTED = UnsafeProviderURL.user_message
TOO_LARGE = ResultTooLarge.user_message
MEGAPIXEL = 1024 * 1024
MALFORMED_LINKS = [
    "https://[zz]/x",  # urlsplit raises a bare ValueError
    "http://[::1/x",
    "https://api.bfl.ai:99999/v1/get_result",  # port out of range
    "https://api.bfl.ai:-1/v1/get_result",
    "https://\u2100.example/x",  # bad under NFKC / IDNA
    "https://api.bfl.ai\x00/v1/get_result",  # a control character: httpx refuses it
]


# --------------------------------------------------------------------------- helpers
@pytest.fixture
def connections(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int]]:
    """Every (host, port) the process opens a TCP connection to during the test."""
    opened: list[tuple[str, int]] = []
    real = asyncio.base_events.BaseEventLoop.create_connection

    async def recording(
        self: Any, protocol_factory: Any, host: Any = None, port: Any = None, **kwargs: Any
    ) -> Any:
        peer = (host, port)
        sock = kwargs.get("sock")
        if host is None and sock is not None:  # aiohttp connects the socket itself first
            peer = sock.getpeername()[:2]
        opened.append((str(peer[0]), int(peer[1] or 0)))
        return await real(self, protocol_factory, host, port, **kwargs)

    monkeypatch.setattr(asyncio.base_events.BaseEventLoop, "create_connection", recording)
    return opened


@pytest.fixture
def fake_dns(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, list[str]]]:
    """Names the event loop's resolver answers with the given addresses (others as usual)."""
    names: dict[str, list[str]] = {}
    real = asyncio.base_events.BaseEventLoop.getaddrinfo

    async def resolve(self: Any, host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host in names:
            return [
                (
                    socket.AF_INET6 if ":" in a else socket.AF_INET,
                    socket.SOCK_STREAM,
                    6,
                    "",
                    (a, port) if ":" not in a else (a, port, 0, 0),
                )
                for a in names[host]
            ]
        return await real(self, host, port, *args, **kwargs)

    monkeypatch.setattr(asyncio.base_events.BaseEventLoop, "getaddrinfo", resolve)
    yield names


@pytest.fixture
def decoded(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int]]:
    """The size of every image Pillow decodes (loads the pixels of) during the test."""
    sizes: list[tuple[int, int]] = []
    real = ImageFile.ImageFile.load

    def recording(self: ImageFile.ImageFile) -> Any:
        sizes.append(self.size)
        return real(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", recording)
    return sizes


class HeaderRecorder:
    """A tiny server on its own loopback port: records the headers of every request, and
    answers polls "Task not found" and anything else with a small PNG."""

    def __init__(self) -> None:
        self.headers: list[dict[str, str]] = []
        self.base_url = ""
        self._runner: web.AppRunner | None = None

    async def __aenter__(self) -> HeaderRecorder:
        app = web.Application()
        app.router.add_get("/{path:.*}", self._answer)
        self._runner, self.base_url = await serve_on_loopback(app)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._runner is not None
        await self._runner.cleanup()

    async def _answer(self, request: web.Request) -> web.Response:
        self.headers.append({k.lower(): v for k, v in request.headers.items()})
        if request.path.startswith("/v1/"):
            return web.json_response({"id": request.query.get("id"), "status": "Task not found"})
        return web.Response(body=png(16, 16).data, content_type="image/png")


def hosts(opened: list[tuple[str, int]]) -> set[str]:
    return {host for host, _ in opened}


async def ended(engine: JobEngine, prompt: str) -> Any:
    job, _ = await engine.accept(make_request(prompt))
    [final] = await engine.wait_closed([job.id], 10)
    return final


async def ledger_row(db: Database, job_id: str) -> Any:
    return await db.fetch_one("SELECT * FROM ledger WHERE job_id = ?", (job_id,))


# --------------------------------------------------------------------------- the rules
@pytest.mark.parametrize(
    ("address", "allowed"),
    [
        ("93.184.216.34", True),
        ("2606:4700::1111", True),
        ("127.0.0.1", False),
        ("10.0.0.1", False),
        ("172.16.5.4", False),
        ("192.168.1.1", False),
        ("169.254.169.254", False),  # cloud metadata
        ("100.64.0.1", False),  # CGNAT
        ("0.0.0.0", False),
        ("224.0.0.1", False),  # multicast
        ("240.0.0.1", False),  # reserved
        ("255.255.255.255", False),
        ("::1", False),
        ("::", False),
        ("fe80::1", False),
        ("fd00::1", False),  # ULA
        ("fec0::1", False),  # site-local
        ("ff02::1", False),
        ("::ffff:10.0.0.1", False),  # IPv4-mapped
        ("::ffff:169.254.169.254", False),
        ("2002:a00:1::", False),  # 6to4 around 10.0.0.1
        ("64:ff9b::a00:1", False),  # NAT64 around 10.0.0.1
        ("64:ff9b::5db8:d822", True),  # NAT64 around a public address
    ],
)
def test_only_global_addresses_are_allowed(address: str, allowed: bool) -> None:
    assert address_allowed(ipaddress.ip_address(address)) is allowed


def test_loopback_is_allowed_only_by_the_test_switch() -> None:
    for text in ("127.0.0.1", "::1", "::ffff:127.0.0.1"):
        assert address_allowed(ipaddress.ip_address(text), allow_loopback=True)
        assert not address_allowed(ipaddress.ip_address(text))
    # The switch admits loopback only, never a private or link-local address.
    assert not address_allowed(ipaddress.ip_address("10.0.0.1"), allow_loopback=True)
    assert not address_allowed(ipaddress.ip_address("169.254.169.254"), allow_loopback=True)


@pytest.mark.parametrize(
    ("url", "gets_key"),
    [
        ("https://api.bfl.ai/v1/get_result?id=1", True),
        ("https://api.eu.bfl.ai/v1/get_result?id=1", True),
        ("https://api.us.bfl.ai/v1/flux-2-pro", True),
        ("https://api.eu2.bfl.ai/v1/get_result?id=1", True),  # a regional cluster
        ("https://API.BFL.AI:443/v1/credits", True),
        ("http://api.bfl.ai/v1/get_result", False),  # plain http
        ("https://api.bfl.ai:8443/v1/get_result", False),  # another port
        ("https://delivery-eu1.bfl.ai/results/x.jpg", False),  # a delivery host
        ("https://api.bfl.ai.evil.example/v1/get_result", False),
        ("https://evil.example/v1/get_result", False),
        ("https://user:pw@api.bfl.ai/v1/get_result", False),
        ("https://169.254.169.254/latest/meta-data", False),
        ("http://127.0.0.1:8080/v1/get_result", False),  # loopback, without the test switch
    ],
)
def test_the_bfl_key_goes_only_to_documented_api_hosts_over_https(url: str, gets_key: bool) -> None:
    assert EgressPolicy("https://api.bfl.ai", bfl=True).may_receive_key(url) is gets_key


def test_the_test_switch_lets_the_key_reach_the_configured_stand_in_only() -> None:
    """The switch relaxes https and the public-address rule, nothing else: the key goes only
    to the configured base's host and port."""
    policy = EgressPolicy("http://127.0.0.1:9999", allow_loopback=True, bfl=True)
    assert policy.may_receive_key("http://127.0.0.1:9999/v1/get_result")
    assert policy.may_receive_key("https://127.0.0.1:9999/v1/get_result")
    assert not policy.may_receive_key("http://127.0.0.1:1234/v1/poll")  # another port
    assert not policy.may_receive_key("http://127.0.0.1/v1/poll")  # port 80
    assert not policy.may_receive_key("http://localhost:9999/v1/poll")  # another host
    assert not policy.may_receive_key("http://127.0.0.2:9999/v1/poll")
    assert not policy.may_receive_key("http://10.0.0.1/v1/get_result")
    assert not policy.may_receive_key("http://api.bfl.ai/v1/get_result")
    assert policy.may_receive_key("https://api.eu2.bfl.ai/v1/get_result")  # as without it
    # Result links carry no key: under the switch any loopback port may serve one.
    policy.check_fetch_url("http://localhost:1234/delivery/sample.png")


@pytest.mark.parametrize("link", MALFORMED_LINKS)
def test_a_malformed_link_is_untrusted_not_an_error(link: str) -> None:
    policy = EgressPolicy("https://api.bfl.ai", bfl=True)
    assert policy.may_receive_key(link) is False
    with pytest.raises(UnsafeProviderURL):
        policy.check_fetch_url(link)
    with pytest.raises(UnsafeProviderURL):
        same_host("https://api.bfl.ai/x", link)
    assert link_host(link) == "a malformed link"
    with pytest.raises(ValueError, match="not a valid URL"):
        EgressPolicy(link)


def test_an_api_base_the_key_cannot_travel_to_is_refused_at_start_up() -> None:
    with pytest.raises(SettingsError, match="BFL_API_BASE: the API base is not https"):
        load_settings(discord_token="x", bfl_api_base="http://api.bfl.ai")
    with pytest.raises(SettingsError, match=r"AIML_API_BASE: .* default https port"):
        load_settings(discord_token="x", aiml_api_base="https://api.aimlapi.com:8443")
    with pytest.raises(SettingsError, match="BFL_API_BASE"):
        load_settings(discord_token="x", bfl_api_base="http://127.0.0.1:8080")
    allowed = load_settings(
        discord_token="x", bfl_api_base="http://127.0.0.1:8080", allow_loopback_provider_urls=True
    )
    assert allowed.bfl_api_base == "http://127.0.0.1:8080"
    defaults = load_settings(discord_token="x")
    assert defaults.allow_loopback_provider_urls is False
    assert defaults.max_reported_cost_credits == 500
    with pytest.raises(ValueError, match="not https"):
        BFLClient(BFL_KEY, "http://api.bfl.ai")


async def test_every_resolved_address_is_checked(fake_dns: dict[str, list[str]]) -> None:
    fake_dns["inside.example"] = ["10.0.0.7"]
    fake_dns["rebind.example"] = ["93.184.216.34", "10.0.0.7"]  # one bad answer is enough
    fake_dns["public.example"] = ["93.184.216.34"]
    with pytest.raises(UnsafeProviderURL, match=r"inside\.example"):
        await resolve_allowed("inside.example", 443)
    with pytest.raises(UnsafeProviderURL, match=r"rebind\.example"):
        await resolve_allowed("rebind.example", 443)
    assert await resolve_allowed("public.example", 443) == ["93.184.216.34"]
    with pytest.raises(UnsafeProviderURL):
        await resolve_allowed("[::ffff:127.0.0.1]", 443)


async def test_the_transport_refuses_private_addresses(
    fake_dns: dict[str, list[str]], connections: list[tuple[str, int]]
) -> None:
    """The check lives in the connection itself: even a request that skipped every other
    check cannot reach a private address, and no socket is opened."""
    fake_dns["metadata.example"] = ["169.254.169.254"]
    async with guarded_client(
        timeout=httpx.Timeout(2.0), limits=httpx.Limits(), allow_loopback=True
    ) as http:
        for url in (
            "http://10.0.0.1/",
            "http://metadata.example/latest",
            "http://[fd00::1]/",
            "http://[::ffff:10.0.0.1]/",
        ):
            with pytest.raises(UnsafeProviderURL):
                await http.get(url)
    assert connections == []


async def test_the_transport_connects_to_the_address_it_checked(
    fake_bfl: FakeBFL, fake_dns: dict[str, list[str]], connections: list[tuple[str, int]]
) -> None:
    """The name is resolved once, checked, and the socket opened to that address: a second
    lookup (where a rebinding DNS server would answer differently) never happens."""
    port = int(fake_bfl.base_url.rsplit(":", 1)[1])
    fake_dns["standin.test"] = ["127.0.0.1"]
    async with guarded_client(
        timeout=httpx.Timeout(2.0), limits=httpx.Limits(), allow_loopback=True
    ) as http:
        answer = await http.get(f"http://standin.test:{port}/v1/credits")
    assert answer.status_code == 403  # reached the stand-in (no key sent by this client)
    assert connections == [("127.0.0.1", port)]
    assert (f"standin.test:{port}", "/v1/credits") in fake_bfl.requests_seen


@pytest.mark.parametrize(
    ("reported", "believed"),
    [
        (2.5, 2.5),
        (0, 0.0),
        (-5, None),
        (1e300, None),
        (math.inf, None),
        (math.nan, None),
        (501, None),
        (None, None),
    ],
)
def test_a_reported_cost_is_believed_only_in_range(
    reported: float | None, believed: float | None
) -> None:
    assert sane_cost(reported, 500)[0] == believed


def test_a_result_may_have_twice_the_pixels_asked_for() -> None:
    pro = get_variant("pro")
    plain = make_request("x").params
    sized = make_request("x", width=1440, height=1440).params
    assert result_pixel_limit(pro, plain, has_references=False) == 2 * MEGAPIXEL
    assert result_pixel_limit(pro, sized, has_references=False) == 2 * 1440 * 1440
    assert result_pixel_limit(pro, sized, has_references=True) == 2 * 1440 * 1440
    # With references and no size the output follows the first one: at most the model's limit.
    assert result_pixel_limit(pro, plain, has_references=True) == 2 * 4 * MEGAPIXEL


def test_a_result_over_its_pixels_is_refused_from_the_header(
    decoded: list[tuple[int, int]],
) -> None:
    with pytest.raises(UntrustedResultSize) as caught:
        output_image(huge_png(10000, 10000), max_pixels=2 * MEGAPIXEL)
    assert caught.value.user_message == TOO_LARGE
    assert isinstance(caught.value, ResultUnavailable)  # settled like any unusable result
    assert output_image(huge_png(1448, 1448), max_pixels=2 * MEGAPIXEL).width == 1448
    assert output_image(huge_png(10000, 10000)).height == 10000  # no limit given
    assert decoded == []  # only headers were read


def test_reported_numbers_never_raise() -> None:
    assert reported_number(10**400) == math.inf
    assert reported_number(-(10**400)) == -math.inf
    assert reported_number("nan") is None
    assert reported_number(True) is None


# --------------------------------------------------------------------------- BFL, end to end
async def test_a_polling_url_at_a_private_address_is_never_polled(
    make_engine: EngineFactory, fake_bfl: FakeBFL, connections: list[tuple[str, int]]
) -> None:
    fake_bfl.polling_url_override = "http://169.254.169.254/latest/meta-data?id={id}"
    engine = await make_engine()
    final = await ended(engine, "metadata please")
    # The job still finishes: the documented fallback on the configured host is polled.
    assert final.state is JobState.DELIVERED
    assert final.polling_url is None
    assert "169.254.169.254" not in hosts(connections)
    assert any(path == "/v1/get_result" for _, path in fake_bfl.requests_seen)


async def test_a_polling_url_on_another_https_host_is_never_polled(
    make_engine: EngineFactory, fake_bfl: FakeBFL, connections: list[tuple[str, int]]
) -> None:
    fake_bfl.polling_url_override = "https://collector.evil.example/v1/poll?id={id}"
    engine = await make_engine()
    final = await ended(engine, "steal my key")
    assert final.state is JobState.DELIVERED
    assert all(host.startswith("127.") for host in hosts(connections))


@pytest.mark.parametrize("link", ["https://[zz]/x", "http://[::1/v1/get_result"])
async def test_a_malformed_polling_url_is_ignored_and_the_task_polled_by_id(
    make_engine: EngineFactory, fake_bfl: FakeBFL, notifier: RecordingNotifier, link: str
) -> None:
    fake_bfl.polling_url_override = link
    engine = await make_engine()
    final = await ended(engine, "malformed poll")
    assert (final.state, final.error) == (JobState.DELIVERED, None)
    assert final.polling_url is None
    assert any(path == "/v1/get_result" for _, path in fake_bfl.requests_seen)
    shown = notifier.outcome(final.id)
    assert shown is not None and shown.kind == "result" and shown.images
    assert (await ledger_row(engine.store._db, final.id))["status"] == "charged"


async def test_a_polling_url_on_another_loopback_port_never_gets_the_key(
    make_engine: EngineFactory, fake_bfl: FakeBFL
) -> None:
    """Under the test switch the key still goes only to the configured base's host and port:
    a polling_url on the stand-in's host but another port is not polled (get_result is)."""
    async with HeaderRecorder() as elsewhere:
        fake_bfl.polling_url_override = elsewhere.base_url + "/v1/poll/{region}/{id}?token={token}"
        engine = await make_engine()
        final = await ended(engine, "other port")
    assert final.state is JobState.DELIVERED
    assert not any("x-key" in headers for headers in elsewhere.headers)
    assert elsewhere.headers == []  # not polled at all
    assert any(path == "/v1/get_result" for _, path in fake_bfl.requests_seen)


async def test_a_result_link_on_another_loopback_port_is_fetched_without_the_key(
    make_engine: EngineFactory, fake_bfl: FakeBFL, notifier: RecordingNotifier
) -> None:
    async with HeaderRecorder() as delivery:
        fake_bfl.sample_url_override = delivery.base_url + "/results/{id}.png"
        engine = await make_engine()
        final = await ended(engine, "delivered elsewhere")
    assert final.state is JobState.DELIVERED
    assert (final.result_width, final.result_height) == (16, 16)  # the recorder's image
    assert len(delivery.headers) == 1
    assert "x-key" not in delivery.headers[0]
    assert BFL_KEY not in repr(delivery.headers)


async def test_a_poll_redirect_to_another_host_is_not_followed(
    make_engine: EngineFactory, fake_bfl: FakeBFL
) -> None:
    port = fake_bfl.base_url.rsplit(":", 1)[1]
    fake_bfl.polling_url_override = (
        "{base}/redirect?to=http://localhost:" + port + "/v1/poll/{region}/{id}?token={token}"
    )
    engine = await make_engine()
    final = await ended(engine, "follow me")
    assert (final.state, final.error) == (JobState.FAILED, UNTRUSTED)
    assert not any(host.startswith("localhost") for host, _ in fake_bfl.requests_seen)
    row = await ledger_row(engine.store._db, final.id)
    assert row["status"] == "refunded"


@pytest.mark.parametrize(
    "sample",
    [
        "http://10.0.0.1/sample.jpg",
        "https://10.0.0.1/sample.jpg",
        "https://169.254.169.254/latest/meta-data",
        "https://[::ffff:192.168.0.1]/sample.jpg",
        "ftp://delivery.example/sample.jpg",
    ],
)
async def test_a_result_link_at_a_private_address_is_never_downloaded(
    make_engine: EngineFactory,
    fake_bfl: FakeBFL,
    connections: list[tuple[str, int]],
    notifier: RecordingNotifier,
    sample: str,
) -> None:
    fake_bfl.sample_url_override = sample
    engine = await make_engine()
    final = await ended(engine, "fetch that")
    assert (final.state, final.error) == (JobState.FAILED, UNTRUSTED)
    assert all(host.startswith("127.") for host in hosts(connections))
    shown = notifier.outcome(final.id)
    assert shown is not None and shown.kind == "failure"
    assert (await ledger_row(engine.store._db, final.id))["status"] == "refunded"


@pytest.mark.parametrize("sample", MALFORMED_LINKS[:2])
async def test_a_malformed_result_link_ends_as_untrusted(
    make_engine: EngineFactory, fake_bfl: FakeBFL, notifier: RecordingNotifier, sample: str
) -> None:
    fake_bfl.sample_url_override = sample
    engine = await make_engine()
    final = await ended(engine, "malformed link")
    assert (final.state, final.error) == (JobState.FAILED, UNTRUSTED)
    shown = notifier.outcome(final.id)
    assert shown is not None and shown.kind == "failure"
    assert (await ledger_row(engine.store._db, final.id))["status"] == "refunded"


async def test_a_redirect_to_a_malformed_link_ends_as_unusable(
    make_engine: EngineFactory, fake_bfl: FakeBFL
) -> None:
    # httpx itself refuses the Location (a protocol error): the result could not be fetched.
    fake_bfl.sample_url_override = "{base}/redirect?to=https://[zz]/sample.jpg"
    engine = await make_engine()
    final = await ended(engine, "malformed redirect")
    assert (final.state, final.error) == (JobState.FAILED, ResultUnavailable.user_message)
    assert (await ledger_row(engine.store._db, final.id))["status"] == "refunded"


async def test_a_result_far_larger_than_asked_is_refused_before_it_is_decoded(
    make_engine: EngineFactory,
    fake_bfl: FakeBFL,
    notifier: RecordingNotifier,
    decoded: list[tuple[int, int]],
) -> None:
    fake_bfl.result_size = (10000, 10000)  # ~12 KB on the wire, for a 1 MP request
    engine = await make_engine()
    final = await ended(engine, "a lighthouse")
    assert (final.state, final.error) == (JobState.FAILED, TOO_LARGE)
    shown = notifier.outcome(final.id)
    assert shown is not None and shown.kind == "failure" and not shown.images
    assert (await ledger_row(engine.store._db, final.id))["status"] == "refunded"
    assert (10000, 10000) not in decoded
    assert await engine.store.outputs(final.id) == []


async def test_a_result_a_little_larger_than_asked_is_delivered(
    make_engine: EngineFactory, fake_bfl: FakeBFL
) -> None:
    fake_bfl.result_size = (1440, 1440)  # about 2 MP for 1 MP: a rounding, not an attack
    engine = await make_engine()
    final = await ended(engine, "a little more")
    assert final.state is JobState.DELIVERED
    assert (final.result_width, final.result_height) == (1440, 1440)


async def test_a_result_redirect_to_another_host_is_not_followed(
    make_engine: EngineFactory, fake_bfl: FakeBFL
) -> None:
    port = fake_bfl.base_url.rsplit(":", 1)[1]
    fake_bfl.sample_url_override = "{base}/redirect?to=" + (
        "http://localhost:" + port + "/delivery/{id}/sample.jpeg"
    )
    engine = await make_engine()
    final = await ended(engine, "elsewhere")
    assert (final.state, final.error) == (JobState.FAILED, UNTRUSTED)
    assert not any(host.startswith("localhost") for host, _ in fake_bfl.requests_seen)
    assert not any(path.startswith("/delivery/") for _, path in fake_bfl.requests_seen)


async def test_a_result_redirect_on_the_same_host_is_followed(
    make_engine: EngineFactory, fake_bfl: FakeBFL
) -> None:
    fake_bfl.sample_url_override = "{base}/redirect?to={sample_quoted}"
    engine = await make_engine()
    final = await ended(engine, "same host")
    assert final.state is JobState.DELIVERED


async def test_a_huge_poll_answer_ends_the_job(
    make_engine: EngineFactory, fake_bfl: FakeBFL
) -> None:
    fake_bfl.poll_padding = 5 * 1024 * 1024  # over the 4 MiB cap for a status answer
    engine = await make_engine()
    final = await ended(engine, "padded")
    assert (final.state, final.error) == (JobState.FAILED, AnswerTooLarge.user_message)


async def test_an_endless_poll_answer_is_not_read_to_the_end(
    make_engine: EngineFactory, fake_bfl: FakeBFL
) -> None:
    fake_bfl.endless_poll_body = True  # chunked, no length: only the streaming cap stops it
    engine = await make_engine()
    final = await asyncio.wait_for(ended(engine, "endless"), 20)
    assert (final.state, final.error) == (JobState.FAILED, AnswerTooLarge.user_message)


@pytest.mark.parametrize(
    "reported",
    [-5, 1e300, math.nan, math.inf, "nan", 10**400],
    ids=["negative", "1e300", "NaN", "Infinity", "nan-string", "huge-int"],
)
async def test_a_hostile_cost_is_not_believed_and_the_image_is_delivered(
    make_engine: EngineFactory,
    fake_bfl: FakeBFL,
    notifier: RecordingNotifier,
    reported: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    fake_bfl.reported_cost = reported
    engine = await make_engine()
    final = await ended(engine, "free money")
    assert (final.state, final.error) == (JobState.DELIVERED, None)
    shown = notifier.outcome(final.id)
    assert shown is not None and shown.kind == "result" and shown.images
    row = await ledger_row(engine.store._db, final.id)
    # Charged the estimate (3 credits for a 1 MP pro image), never a negative or absurd sum.
    assert (row["status"], row["charged_mc"]) == ("charged", credits_to_mc(final.estimated_cost))
    assert row["charged_mc"] == 3000
    usage = await engine.ledger.member_usage(42, final.user_id)
    assert usage.windows[0].credits_mc == 3000
    if reported != "nan":  # a string is not a number at all: nothing to warn about
        warnings = [r for r in caplog.records if "not believing the cost" in r.getMessage()]
        assert 1 <= len(warnings) <= 2  # once per answer that carried it (submit, final)


async def test_a_cost_above_the_setting_is_not_believed(
    db: Database, fake_bfl: FakeBFL, notifier: RecordingNotifier
) -> None:
    fake_bfl.reported_cost = 40
    client = BFLClient(BFL_KEY, fake_bfl.base_url, allow_loopback=True)
    engine = JobEngine(db, {"bfl": client}, notifier, polling=FAST_POLLING, max_reported_cost=25)
    await engine.start()
    try:
        final = await ended(engine, "pricey")
    finally:
        await engine.stop()
        await client.aclose()
    assert final.state is JobState.DELIVERED
    assert (await ledger_row(db, final.id))["charged_mc"] == 3000


async def test_a_sane_reported_cost_is_charged(
    make_engine: EngineFactory, fake_bfl: FakeBFL
) -> None:
    fake_bfl.reported_cost = 2.5
    engine = await make_engine()
    final = await ended(engine, "honest")
    assert (await ledger_row(engine.store._db, final.id))["charged_mc"] == 2500


# --------------------------------------------------------------------------- the ledger
@pytest.mark.parametrize("credits", [-5.0, math.nan, math.inf, 1e300])
async def test_the_ledger_refuses_impossible_charges(
    make_engine: EngineFactory, credits: float
) -> None:
    engine = await make_engine(start=False)
    job = await engine.store.create(make_request("held"), estimated_cost=3.0)

    def charge(conn: Any) -> bool:
        return engine.ledger.charge(conn, job.id, credits=credits, images=1, settled_by="test")

    with pytest.raises(InvalidCharge):
        await engine.store._db.run(charge)
    assert (await ledger_row(engine.store._db, job.id))["status"] == "reserved"


async def test_a_finished_image_with_an_impossible_cost_is_charged_the_estimate(
    make_engine: EngineFactory,
) -> None:
    """Behind the engine's filter, the store still never fails a finished image over a bad
    figure: the ledger refuses it and the estimate is charged."""
    engine = await make_engine(start=False)
    job = await engine.store.create(make_request("made"), estimated_cost=3.0)
    await engine.store.transition(job.id, from_states=(JobState.QUEUED,), to=JobState.SUBMITTED)
    image = png(8, 8)
    won = await engine.store.mark_ready(
        job.id, [OutputImage(image.content_type, 8, 8, image.data)], seed=1, cost=-5.0
    )
    assert won
    row = await ledger_row(engine.store._db, job.id)
    assert (row["status"], row["charged_mc"]) == ("charged", 3000)


# --------------------------------------------------------------------------- the AI/ML API
@pytest.fixture
async def aiml() -> AsyncIterator[FakeAIML]:
    async with FakeAIML(api_key="test-aiml-key", latency=0.01) as fake:
        yield fake


async def test_aiml_result_links_at_private_addresses_are_never_fetched(
    aiml: FakeAIML, connections: list[tuple[str, int]]
) -> None:
    client = AIMLClient("test-aiml-key", aiml.base_url, allow_loopback=True)
    aiml.faults.append(
        Fault(
            200,
            body={
                "data": [
                    {"url": "https://169.254.169.254/img.png"},
                    {"url": "http://10.1.2.3/img.png"},
                ]
            },
        )
    )
    try:
        with pytest.raises(UnsafeProviderURL):
            await client.generate(build_payload("blackforestlabs/flux-2", "p", {"num_images": 2}))
    finally:
        await client.aclose()
    assert all(host.startswith("127.") for host in hosts(connections))


async def test_a_malformed_aiml_result_link_is_untrusted(aiml: FakeAIML) -> None:
    client = AIMLClient("test-aiml-key", aiml.base_url, allow_loopback=True)
    aiml.faults.append(Fault(200, body={"data": [{"url": "https://[zz]/img.png"}]}))
    try:
        with pytest.raises(UnsafeProviderURL):
            await client.generate(build_payload("blackforestlabs/flux-2", "p"))
    finally:
        await client.aclose()


async def test_an_aiml_result_far_larger_than_asked_is_refused(
    db: Database, aiml: FakeAIML, notifier: RecordingNotifier, decoded: list[tuple[int, int]]
) -> None:
    inline = base64.b64encode(huge_png(10000, 10000)).decode()
    aiml.faults.append(Fault(200, body={"data": [{"b64_json": inline}]}))
    client = AIMLClient("test-aiml-key", aiml.base_url, allow_loopback=True)
    engine = JobEngine(db, {"aiml": client}, notifier, polling=FAST_POLLING)
    await engine.start()
    try:
        job, _ = await engine.accept(make_request("aiml", variant="dev"))
        [final] = await engine.wait_closed([job.id], 10)
    finally:
        await engine.stop()
        await client.aclose()
    assert (final.state, final.error) == (JobState.FAILED, TOO_LARGE)
    assert (await ledger_row(db, final.id))["status"] == "refunded"
    assert (10000, 10000) not in decoded


async def test_aiml_result_redirects_to_another_host_are_not_followed(aiml: FakeAIML) -> None:
    client = AIMLClient("test-aiml-key", aiml.base_url, allow_loopback=True)
    seen: list[str] = []

    async def generate_once() -> None:
        await client.generate(build_payload("blackforestlabs/flux-2", "p"))

    # A CDN link that redirects to another host: the BFL stand-in's redirect route serves it.
    async with FakeBFL() as other:
        cdn_port = aiml.cdn_base_url.rsplit(":", 1)[1]
        target = f"http://localhost:{cdn_port}/files/0/0.png"
        aiml.faults.append(
            Fault(200, body={"data": [{"url": f"{other.base_url}/redirect?to={target}"}]})
        )
        try:
            with pytest.raises(ResultUnavailable) as caught:
                await generate_once()
        finally:
            await client.aclose()
        seen = [host for host, _ in other.requests_seen]
    assert isinstance(caught.value, UnsafeProviderURL)
    assert seen and all(host.startswith("127.0.0.1") for host in seen)
    assert aiml.downloads == []


async def test_an_absurd_aiml_usage_is_not_believed(
    db: Database, aiml: FakeAIML, notifier: RecordingNotifier
) -> None:
    inline = base64.b64encode(png(16, 16).data).decode()
    aiml.faults.append(
        Fault(
            200, body={"data": [{"b64_json": inline}], "meta": {"usage": {"credits_used": 1e300}}}
        )
    )
    client = AIMLClient("test-aiml-key", aiml.base_url, allow_loopback=True)
    engine = JobEngine(db, {"aiml": client}, notifier, polling=FAST_POLLING)
    await engine.start()
    try:
        job, _ = await engine.accept(make_request("aiml", variant="dev"))
        [final] = await engine.wait_closed([job.id], 10)
    finally:
        await engine.stop()
        await client.aclose()
    assert final.state is JobState.DELIVERED
    row = await ledger_row(db, final.id)
    assert (row["status"], row["charged_mc"]) == ("charged", credits_to_mc(final.estimated_cost))
