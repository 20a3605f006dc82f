"""Self-tests of the Discord stand-in's rate limits and interaction token expiry.

Raw requests check the wire format (headers, 429 bodies, windows); the unmodified discord.py
client checks that it reads those headers and waits instead of earning 429s.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp
import discord
import pytest
from discord import app_commands

from tests.e2e.standin_clients import (
    connected,
    no_leaks,  # noqa: F401 (autouse)
    sync_to_guild,
)
from tests.fakes.discord_server import Channel as FakeChannel
from tests.fakes.discord_server import FakeDiscord, Guild, InteractionHandle, User

LIMIT_HEADERS = (
    "X-RateLimit-Limit",
    "X-RateLimit-Remaining",
    "X-RateLimit-Reset",
    "X-RateLimit-Reset-After",
    "X-RateLimit-Bucket",
)


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: Any

    def header(self, name: str) -> str:
        return self.headers[name.lower()]

    @property
    def remaining(self) -> int:
        return int(self.header("X-RateLimit-Remaining"))

    @property
    def bucket(self) -> str:
        return self.header("X-RateLimit-Bucket")


class Api:
    """Raw REST calls to the fake, authenticated as the bot unless ``auth=False``."""

    def __init__(self, fake: FakeDiscord, session: aiohttp.ClientSession) -> None:
        self.fake = fake
        self.session = session

    async def __call__(
        self, method: str, path: str, json: Any = None, *, auth: bool = True
    ) -> Answer:
        headers = {"Authorization": f"Bot {self.fake.token}"} if auth else {}
        url = f"{self.fake.base_url}/api/v10{path}"
        async with self.session.request(method, url, json=json, headers=headers) as response:
            body = await response.json() if response.content_type == "application/json" else None
            return Answer(
                response.status, {k.lower(): v for k, v in response.headers.items()}, body
            )

    async def post(self, channel_id: int, content: str = "hi") -> Answer:
        return await self("POST", f"/channels/{channel_id}/messages", {"content": content})

    async def followup(self, token: str, content: str = "more") -> Answer:
        path = f"/webhooks/{self.fake.application_id}/{token}"
        return await self("POST", path, {"content": content}, auth=False)


class HoldClient(discord.Client):
    """``/hold`` defers and hands the live ``discord.Interaction`` to the test."""

    def __init__(self) -> None:
        super().__init__(intents=discord.Intents.default(), guild_ready_timeout=0.05)
        self.tree = app_commands.CommandTree(self)
        self.ready = asyncio.Event()
        self.held: dict[int, discord.Interaction] = {}

        @self.tree.command(description="Defer and wait for the test")
        async def hold(interaction: discord.Interaction, ephemeral: bool = False) -> None:
            await interaction.response.defer(thinking=True, ephemeral=ephemeral)
            self.held[interaction.id] = interaction

    async def on_ready(self) -> None:
        self.ready.set()


@dataclass
class World:
    fake: FakeDiscord
    api: Api
    guild: Guild
    channel: FakeChannel
    other: FakeChannel
    alice: User

    async def hold(
        self, client: HoldClient, *, ephemeral: bool = False, channel: FakeChannel | None = None
    ) -> tuple[InteractionHandle, discord.Interaction]:
        it = await self.fake.invoke_slash(
            self.alice, channel or self.channel, "hold", {"ephemeral": ephemeral}
        )
        await it.response()
        await self.fake.wait_for(lambda: it.id in client.held)
        return it, client.held[it.id]


@pytest.fixture
async def world(request: pytest.FixtureRequest) -> AsyncIterator[World]:
    options: dict[str, Any] = getattr(request, "param", {})
    async with FakeDiscord(**options) as fake, aiohttp.ClientSession() as session:
        guild = fake.add_guild("Test Guild")
        channel = fake.add_text_channel(guild.id, "general")
        other = fake.add_text_channel(guild.id, "other")
        alice = fake.add_member(guild.id, "alice")
        with fake.patch_discord_py():
            yield World(fake, Api(fake, session), guild, channel, other, alice)
        assert not fake.unhandled_requests, fake.unhandled_requests
        # Every 429 on the wire is recorded, and nothing else is.
        refused = [(r.method, r.path) for r in fake.requests if r.status == 429]
        assert refused == [(hit.method, hit.path) for hit in fake.rate_limited]


@asynccontextmanager
async def running(world: World) -> AsyncIterator[HoldClient]:
    async with connected(HoldClient(), world.fake.token) as client:
        await sync_to_guild(client, world.guild.id)
        yield client


def assert_refused(
    answer: Answer, *, is_global: bool, max_retry: float, scope: str | None = None
) -> float:
    """A genuine Discord 429; returns its ``retry_after``."""
    assert answer.status == 429
    assert answer.header("Content-Type").startswith("application/json")
    assert set(answer.body) == {"message", "retry_after", "global", "code"}
    assert answer.body["message"] == "You are being rate limited."
    assert answer.body["global"] is is_global and answer.body["code"] == 0
    retry_after = answer.body["retry_after"]
    assert isinstance(retry_after, float) and 0 < retry_after <= max_retry
    assert answer.header("Retry-After") == str(math.ceil(retry_after))
    assert answer.header("Via") == "1.1 google"  # else discord.py assumes a Cloudflare ban
    assert answer.header("X-RateLimit-Scope") == (scope or ("global" if is_global else "user"))
    assert answer.headers.get("x-ratelimit-global") == ("true" if is_global else None)
    return float(retry_after)


# ---------------------------------------------------------------------------- route buckets
async def test_message_sends_are_five_per_five_seconds_per_channel(world: World) -> None:
    fake, api = world.fake, world.api
    sent = [await api.post(world.channel.id, f"m{i}") for i in range(5)]
    assert [a.status for a in sent] == [200] * 5
    assert [a.remaining for a in sent] == [4, 3, 2, 1, 0]
    assert {a.header("X-RateLimit-Limit") for a in sent} == {"5"}
    (bucket,) = {a.bucket for a in sent}
    last = sent[-1]
    reset_after = float(last.header("X-RateLimit-Reset-After"))
    assert 4 < reset_after <= 5
    assert abs(float(last.header("X-RateLimit-Reset")) - (time.time() + reset_after)) < 0.5

    refused = await api.post(world.channel.id, "m5")
    retry_after = assert_refused(refused, is_global=False, max_retry=5)
    assert refused.remaining == 0 and refused.bucket == bucket
    assert [m.content for m in fake.messages(world.channel.id)] == [f"m{i}" for i in range(5)]
    (hit,) = fake.rate_limited
    path = f"/channels/{world.channel.id}/messages"
    assert (hit.method, hit.path, hit.bucket, hit.scope) == ("POST", path, bucket, "user")
    assert hit.retry_after == retry_after and not hit.is_global
    assert abs(hit.time - time.time()) < 5
    assert [(r.path, r.status) for r in fake.requests][-1] == (path, 429)

    # Another channel has its own window; the hash names the bucket group, not the channel.
    elsewhere = await api.post(world.other.id)
    assert elsewhere.status == 200 and elsewhere.remaining == 4 and elsewhere.bucket == bucket

    await asyncio.sleep(retry_after)
    again = await api.post(world.channel.id, "after the window")
    assert again.status == 200 and again.remaining == 4
    assert 4.9 < float(again.header("X-RateLimit-Reset-After")) <= 5


async def test_edits_count_apart_from_sends_but_answer_their_hash(world: World) -> None:
    api = world.api
    sent = [await api.post(world.channel.id) for _ in range(5)]
    message_id = sent[0].body["id"]
    path = f"/channels/{world.channel.id}/messages/{message_id}"
    edits = [await api("PATCH", path, {"content": f"v{i}"}) for i in range(6)]
    assert [a.status for a in edits[:5]] == [200] * 5  # the exhausted send budget is not theirs
    assert [a.remaining for a in edits[:5]] == [4, 3, 2, 1, 0]
    assert {a.bucket for a in edits} == {sent[0].bucket}  # discord-api-docs#1442
    assert_refused(edits[5], is_global=False, max_retry=5)
    assert world.fake.message(int(message_id)).content == "v4"


async def test_deletes_have_their_own_bucket_and_limits_toggle_mid_test(world: World) -> None:
    fake, api = world.fake, world.api
    fake.rate_limits = False  # set up six messages without spending the send budget
    ids = [(await api.post(world.channel.id)).body["id"] for _ in range(6)]
    assert fake.rate_limited == []
    fake.rate_limits = True
    answers = [await api("DELETE", f"/channels/{world.channel.id}/messages/{i}") for i in ids]
    assert [a.status for a in answers] == [204] * 5 + [429]
    assert [a.remaining for a in answers[:5]] == [4, 3, 2, 1, 0]
    assert answers[0].bucket != (await api.post(world.channel.id)).bucket
    retry_after = assert_refused(answers[5], is_global=False, max_retry=1)
    assert not fake.message(int(ids[5])).deleted  # the refused delete did nothing
    await asyncio.sleep(retry_after)
    late = await api("DELETE", f"/channels/{world.channel.id}/messages/{ids[5]}")
    assert late.status == 204 and fake.message(int(ids[5])).deleted


async def test_own_reactions_are_one_per_quarter_second_for_both_methods(world: World) -> None:
    api = world.api
    message_id = (await api.post(world.channel.id)).body["id"]
    path = f"/channels/{world.channel.id}/messages/{message_id}/reactions/%F0%9F%91%8D/@me"
    added = await api("PUT", path)
    assert added.status == 204 and added.header("X-RateLimit-Limit") == "1"
    assert added.remaining == 0
    removed = await api("DELETE", path)  # adding and removing share one budget
    retry_after = assert_refused(removed, is_global=False, max_retry=0.25)
    assert removed.bucket == added.bucket
    await asyncio.sleep(retry_after)
    assert (await api("DELETE", path)).status == 204


@pytest.mark.parametrize("world", [{"rate_limits": False}], indirect=True)
async def test_limits_off_never_refuse_and_never_run_out(world: World) -> None:
    fake, api = world.fake, world.api
    assert fake.rate_limits is False
    flood = [await api.post(world.channel.id) for _ in range(12)]
    assert [a.status for a in flood] == [200] * 12
    assert {a.remaining for a in flood} == {5}
    assert fake.rate_limited == []
    fake.rate_limits = True
    answers = [await api.post(world.channel.id) for _ in range(6)]
    assert [a.status for a in answers] == [200] * 5 + [429]
    assert len(fake.rate_limited) == 1


# ---------------------------------------------------------------------------- global limit
async def test_fifty_one_requests_in_a_second_hit_the_global_limit(world: World) -> None:
    fake, api, guild = world.fake, world.api, world.guild
    # Spread over routes so no route bucket (50/s) runs out: only the global one can refuse.
    paths = ["/users/@me", f"/channels/{world.channel.id}", f"/guilds/{guild.id}/roles"]
    started = time.monotonic()
    answers = await asyncio.gather(*(api("GET", paths[i % 3]) for i in range(51)))
    assert time.monotonic() - started < 1.0  # else this proves nothing
    statuses = sorted(a.status for a in answers)
    assert statuses == [200] * 50 + [429]
    (refused,) = [a for a in answers if a.status == 429]
    retry_after = assert_refused(refused, is_global=True, max_retry=1)
    assert not any(name.lower() in refused.headers for name in LIMIT_HEADERS)
    (hit,) = fake.rate_limited
    assert hit.is_global and hit.scope == "global" and hit.method == "GET"
    # The unauthenticated gateway lookup is exempt (and carries no limit headers at all).
    gateway = await api("GET", "/gateway", auth=False)
    assert gateway.status == 200 and "x-ratelimit-bucket" not in gateway.headers
    await asyncio.sleep(retry_after)
    assert (await api("GET", "/users/@me")).status == 200


async def test_followups_are_limited_per_token_and_exempt_from_global(world: World) -> None:
    fake, api = world.fake, world.api
    fake.shared_webhook_limit = None  # 60 followups in one channel: the per-token buckets only
    async with running(world) as client:
        handles = [(await world.hold(client))[0] for _ in range(12)]
        started = time.monotonic()
        answers = await asyncio.gather(
            *(api.followup(it.token, f"{n}-{i}") for n, it in enumerate(handles) for i in range(5))
        )
        assert time.monotonic() - started < 1.0  # 60 > 50 requests in one second
        assert [a.status for a in answers] == [204] * 60
        assert fake.rate_limited == []
        for n in range(12):  # each token counts down its own 5
            assert sorted(a.remaining for a in answers[5 * n : 5 * n + 5]) == [0, 1, 2, 3, 4]
        assert {a.header("X-RateLimit-Limit") for a in answers} == {"5"}
        (bucket,) = {a.bucket for a in answers}

        first = handles[0]
        sixth = await api.followup(first.token, "one too many")
        assert_refused(sixth, is_global=False, max_retry=2)
        assert sixth.bucket == bucket and len(first.followups) == 5
        (hit,) = fake.rate_limited
        assert hit.path == f"/webhooks/{fake.application_id}/{first.token}"
        assert hit.bucket == bucket and hit.scope == "user" and not hit.is_global
        assert (await api.post(world.channel.id)).status == 200  # the bot's own budget is intact


async def test_discord_py_waits_out_buckets_instead_of_earning_429s(world: World) -> None:
    fake = world.fake
    async with running(world) as client:
        channel = client.get_channel(world.channel.id)
        assert isinstance(channel, discord.TextChannel)
        started = time.monotonic()
        await asyncio.gather(*(channel.send(f"flood {i}") for i in range(12)))
        elapsed = time.monotonic() - started
        assert len(fake.messages(world.channel.id)) == 12
        assert fake.rate_limited == []
        # 5 + 5 + 2 sends: two whole 5-second windows waited out, and not much more.
        assert 9.9 <= elapsed < 13, elapsed

        _, interaction = await world.hold(client)
        started = time.monotonic()
        for i in range(6):  # discord.py's webhook adapter holds the token after Remaining 0
            await interaction.followup.send(f"followup {i}")
        assert time.monotonic() - started >= 1.5
        assert fake.rate_limited == []


async def test_followups_share_a_hidden_limit_per_channel(world: World) -> None:
    fake, api = world.fake, world.api
    assert (fake.shared_webhook_limit, fake.shared_webhook_window) == (30, 60.0)
    assert not fake.shared_webhook_limit_counts_edits
    fake.shared_webhook_limit, fake.shared_webhook_window = 3, 2.0
    async with running(world) as client:
        (first, _), (second, _) = [await world.hold(client) for _ in range(2)]
        (elsewhere, _) = await world.hold(client, channel=world.other)
        started = time.monotonic()
        # Two tokens, one channel: their 3 followups spend the channel's 3, not each token's 5.
        answers = [await api.followup(first.token), await api.followup(first.token)]
        answers.append(await api.followup(second.token))
        assert [a.status for a in answers] == [204] * 3
        refused = await api.followup(second.token, "one too many")
        retry_after = assert_refused(refused, is_global=False, max_retry=2.0, scope="shared")
        # The headers still describe the token's own bucket, which has requests left (#4043).
        assert refused.bucket == answers[0].bucket and refused.remaining == 4
        assert retry_after > 2.0 - (time.monotonic() - started) - 0.01  # the channel's window
        (hit,) = fake.rate_limited
        assert (hit.method, hit.path) == ("POST", f"/webhooks/{fake.application_id}/{second.token}")
        assert hit.scope == "shared" and not hit.is_global and hit.retry_after == retry_after
        # Refused before the handler: the deferral was not replaced, nothing was posted.
        assert len(second.followups) == 1 and len(first.followups) == 2
        assert (await api.followup(elsewhere.token)).status == 204  # another channel: its own 3

        # Edits do not count unless the switch says so; then they are refused the same way.
        hook = f"/webhooks/{fake.application_id}/{first.token}/messages/@original"
        assert (await api("PATCH", hook, {"content": "edited"}, auth=False)).status == 200
        fake.shared_webhook_limit_counts_edits = True
        edit = await api("PATCH", hook, {"content": "not shown"}, auth=False)
        assert_refused(edit, is_global=False, max_retry=2.0, scope="shared")
        assert fake.rate_limited[-1].scope == "shared" and first.original is not None
        assert first.original.content == "edited"

        # The channel's window ends: its budget is back (a fixed window, like the others).
        await asyncio.sleep(max(0.0, retry_after + 0.01))
        assert (await api("PATCH", hook, {"content": "later"}, auth=False)).status == 200
        assert first.original.content == "later"
        assert len(fake.rate_limited) == 2


async def test_discord_py_sleeps_out_a_shared_limit_on_webhooks(world: World) -> None:
    fake = world.fake
    fake.shared_webhook_limit, fake.shared_webhook_window = 1, 1.0
    async with running(world) as client:
        _, interaction = await world.hold(client)
        started = time.monotonic()
        await interaction.followup.send("first")
        await interaction.followup.send("second")  # a shared 429: the adapter sleeps, retries
        assert time.monotonic() - started >= 0.9
        [hit] = fake.rate_limited
        assert hit.scope == "shared" and hit.retry_after <= 1.0
        assert [m.content for m in fake.messages(world.channel.id)] == ["first", "second"]


# ---------------------------------------------------------------------------- interaction tokens
async def test_expired_interaction_token_answers_invalid_webhook_token(world: World) -> None:
    fake, api = world.fake, world.api
    fake.interaction_token_lifetime = 1.0
    async with running(world) as client:
        it, interaction = await world.hold(client)
        await interaction.edit_original_response(content="in time")
        original = await it.wait_original()
        assert original.content == "in time"
        await asyncio.sleep(max(0.0, it.created_monotonic + 1.05 - time.monotonic()))
        with pytest.raises(discord.HTTPException) as raised:
            await interaction.edit_original_response(content="too late")
        assert raised.value.status == 401 and raised.value.code == 50027
        assert original.content == "in time"

        # The token's 5-per-2-seconds bucket has 3 left: the PATCH above, by discord.py, is one.
        hook = f"/webhooks/{fake.application_id}/{it.token}"
        answers = [
            await api.followup(it.token),
            await api("GET", f"{hook}/messages/{original.id}", auth=False),
            await api("DELETE", f"{hook}/messages/@original", auth=False),
        ]
        for answer in answers:
            assert answer.status == 401
            assert answer.body == {"message": "Invalid Webhook Token", "code": 50027}
        assert not original.deleted and it.followups == []

        fake.interaction_token_lifetime = 900.0  # a fresh token works as before
        fresh, interaction = await world.hold(client)
        await interaction.edit_original_response(content="fresh")
        assert (await fresh.wait_original()).content == "fresh"


async def test_followup_after_deleting_the_deferral_is_a_new_message(world: World) -> None:
    fake = world.fake
    async with running(world) as client:
        it, interaction = await world.hold(client)
        thinking = it.original
        assert thinking is not None and thinking.loading and not thinking.ephemeral
        await interaction.delete_original_response()
        assert thinking.deleted

        secret = await interaction.followup.send("only you", ephemeral=True, wait=True)
        public = await interaction.followup.send("everyone", wait=True)
        assert secret.id != thinking.id and it.followups == [
            fake.message(secret.id),
            fake.message(public.id),
        ]
        stored = fake.message(secret.id)
        assert stored.ephemeral and stored.visible_to == world.alice.id and not stored.loading
        assert not fake.message(public.id).ephemeral
        assert fake.messages(world.channel.id, include_ephemeral=False) == [fake.message(public.id)]
        assert thinking.deleted and thinking.content == ""
