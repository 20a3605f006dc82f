"""``FakeDiscord``: the public, test-facing facade (see the package docstring for a tour)."""

# The test-facing API deliberately takes ``timeout=`` arguments (``await it.response(timeout=5)``).
# ruff: noqa: ASYNC109

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, TypeVar

import yarl
from aiohttp import web

from tests.fakes.common import LoopbackServer, serve_on_loopback

from ._util import (
    ADMINISTRATOR,
    CHANNEL_PRIVATE_THREAD,
    CHANNEL_PUBLIC_THREAD,
    CHANNEL_TEXT,
    CONTEXT_BOT_DM,
    CONTEXT_GUILD,
    DEFAULT_ATTACHMENT_SIZE_LIMIT,
    DEFAULT_BOT_PERMISSIONS,
    INTENT_GUILD_MEMBERS,
    INTENT_GUILDS,
    INTERACTION_APPLICATION_COMMAND,
    INTERACTION_AUTOCOMPLETE,
    INTERACTION_COMPONENT,
    INTERACTION_MODAL_SUBMIT,
    INTERACTION_TOKEN_LIFETIME_S,
    JSON,
    MISSING_ACCESS,
    MSG_DEFAULT,
    MSG_REPLY,
    PRIVILEGED_INTENTS,
    USE_APPLICATION_COMMANDS,
    VIEW_CHANNEL,
    DiscordHTTPError,
)
from .gateway import GatewayClose, GatewayServer, ShardSession, shard_of
from .models import (
    Channel,
    Guild,
    InteractionHandle,
    LoggedRequest,
    Member,
    Message,
    Role,
    Upload,
    User,
)
from .ratelimits import RateLimitHit
from .rest import RestApi, message_reference
from .state import DiscordState

T = TypeVar("T")
DEFAULT_TOKEN = "test-discord-token"
SELECT_TYPES = (3, 5, 6, 7, 8)
OptionValue = str | int | float | bool | Upload | User | Role | Channel
Snowflakeish = int | str | User | Role | Channel | Guild | Message | JSON


def _id(value: Snowflakeish) -> int:
    """Accept ids or the records the fake hands out (and discord-style dicts with ``id``)."""
    if isinstance(value, User | Role | Channel | Guild | Message):
        return value.id
    if isinstance(value, dict):
        return int(value["id"])
    return int(value)


class FakeDiscord(LoopbackServer):
    """A Discord REST v10 + gateway stand-in on 127.0.0.1 for the unmodified discord.py client."""

    def __init__(
        self,
        *,
        token: str = DEFAULT_TOKEN,
        bot_name: str = "Fluxcord",
        bot_permissions: int = DEFAULT_BOT_PERMISSIONS,
        interaction_deadline: float | None = 3.0,
        attachment_size_limit: int = DEFAULT_ATTACHMENT_SIZE_LIMIT,
        privileged_intents: int = PRIVILEGED_INTENTS,
        heartbeat_interval_ms: int = 41250,
        host: str = "127.0.0.1",
        port: int = 0,
        rate_limits: bool = True,
        interaction_token_lifetime: float = INTERACTION_TOKEN_LIFETIME_S,
        shard_count: int = 1,
        max_concurrency: int = 1,
        identify_interval: float = 5.0,
        identify_rate_limit: bool | None = None,
    ) -> None:
        self._state = DiscordState(
            token=token,
            bot_name=bot_name,
            bot_permissions=bot_permissions,
            interaction_deadline=interaction_deadline,
            attachment_size_limit=attachment_size_limit,
            interaction_token_lifetime=interaction_token_lifetime,
        )
        self._gateway = GatewayServer(
            self._state,
            heartbeat_interval_ms=heartbeat_interval_ms,
            shard_count=shard_count,
            max_concurrency=max_concurrency,
            identify_interval=identify_interval,
            identify_rate_limit=identify_rate_limit,
        )
        self._gateway.allowed_privileged_intents = privileged_intents
        self._state.gateway = self._gateway
        self._rest = RestApi(self._state)
        self._rest.limiter.enabled = rate_limits
        self._host, self._port = host, port
        self._runner: web.AppRunner | None = None
        self.base_url = ""

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        app = web.Application(client_max_size=1024**3)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner, self.base_url = await serve_on_loopback(app, host=self._host, port=self._port)
        self._state.base_url = self.base_url

    async def close(self) -> None:
        await self._gateway.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        await self._state.drain()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        if path.startswith("/api/v10/"):
            return await self._rest.handle_api(request, path.removeprefix("/api/v10"))
        if path.rstrip("/") in ("/gateway", "/gateway-resume"):
            return await self._gateway.handle(request)
        if path.startswith(("/attachments/", "/ephemeral-attachments/", "/media/")):
            return await self._rest.handle_cdn(request)
        return await self._rest.handle_unknown(request)

    @contextlib.contextmanager
    def patch_discord_py(self) -> Iterator[None]:
        """Point discord.py's REST base, default gateway and CDN base at this fake."""
        from discord.asset import Asset
        from discord.gateway import DiscordWebSocket
        from discord.http import Route

        if not self.base_url:
            raise RuntimeError("call `await fake.start()` before patch_discord_py()")
        saved = (Route.BASE, DiscordWebSocket.DEFAULT_GATEWAY, Asset.BASE)
        Route.BASE = f"{self.base_url}/api/v10"
        DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(f"{self._gateway.ws_base()}/gateway/")
        Asset.BASE = self.base_url
        try:
            yield
        finally:
            Route.BASE, DiscordWebSocket.DEFAULT_GATEWAY, Asset.BASE = saved

    # ------------------------------------------------------------------ identity
    @property
    def token(self) -> str:
        return self._state.token

    @property
    def application_id(self) -> int:
        return self._state.application_id

    @property
    def bot_id(self) -> int:
        return self._state.bot.id

    @property
    def bot_user(self) -> JSON:
        return self._state.bot.to_payload()

    @property
    def interaction_deadline(self) -> float | None:
        """Seconds the bot has for its first callback (Discord: 3); None disables the check."""
        return self._state.interaction_deadline

    @interaction_deadline.setter
    def interaction_deadline(self, value: float | None) -> None:
        self._state.interaction_deadline = value

    @property
    def interaction_delivery_delay(self) -> float:
        """Seconds the gateway takes to deliver each interaction (0: at once)."""
        return self._state.interaction_delivery_delay

    @interaction_delivery_delay.setter
    def interaction_delivery_delay(self, value: float) -> None:
        self._state.interaction_delivery_delay = value

    @property
    def rate_limits(self) -> bool:
        """Whether Discord's rate limits are enforced (on by default; settable mid-test)."""
        return self._rest.limiter.enabled

    @rate_limits.setter
    def rate_limits(self, value: bool) -> None:
        self._rest.limiter.enabled = value

    @property
    def shared_webhook_limit(self) -> int | None:
        """Webhook messages (followups) per channel per ``shared_webhook_window`` seconds,
        Discord's hidden shared limit (30; ``None`` turns it off; settable mid-test)."""
        return self._rest.limiter.shared_limit

    @shared_webhook_limit.setter
    def shared_webhook_limit(self, value: int | None) -> None:
        self._rest.limiter.shared_limit = value

    @property
    def shared_webhook_window(self) -> float:
        """The shared limit's fixed window in seconds (60)."""
        return self._rest.limiter.shared_window

    @shared_webhook_window.setter
    def shared_webhook_window(self, value: float) -> None:
        self._rest.limiter.shared_window = value

    @property
    def shared_webhook_limit_counts_edits(self) -> bool:
        """Whether edits of webhook messages (``@original`` too) also count against the
        shared per-channel limit (off by default: Discord has not said)."""
        return self._rest.limiter.shared_counts_edits

    @shared_webhook_limit_counts_edits.setter
    def shared_webhook_limit_counts_edits(self, value: bool) -> None:
        self._rest.limiter.shared_counts_edits = value

    @property
    def rate_limited(self) -> list[RateLimitHit]:
        """Every 429 the stand-in gave, oldest first (they are in ``requests`` too)."""
        return self._rest.limiter.hits

    @property
    def interaction_token_lifetime(self) -> float:
        """Seconds an interaction's webhook routes work after it was created (Discord: 900)."""
        return self._state.interaction_token_lifetime

    @interaction_token_lifetime.setter
    def interaction_token_lifetime(self, value: float) -> None:
        self._state.interaction_token_lifetime = value

    @property
    def attachment_size_limit(self) -> int:
        """Bytes the files of one request may add up to (Discord: 10 MiB without boosts)."""
        return self._state.attachment_size_limit

    @attachment_size_limit.setter
    def attachment_size_limit(self, value: int) -> None:
        self._state.attachment_size_limit = value

    # ------------------------------------------------------------------ sharding
    @property
    def shard_count(self) -> int:
        """Shards Discord asks for (``GET /gateway/bot`` ``shards``); when > 1 every IDENTIFY
        must carry ``shard: [id, shard_count]`` (fewer shards: 4011, another count: 4010)."""
        return self._gateway.shard_count

    @shard_count.setter
    def shard_count(self, value: int) -> None:
        if value < 1:
            raise ValueError("shard_count must be >= 1")
        self._gateway.shard_count = value

    @property
    def max_concurrency(self) -> int:
        """IDENTIFY buckets: shard ``i`` identifies in bucket ``i % max_concurrency``."""
        return self._gateway.max_concurrency

    @max_concurrency.setter
    def max_concurrency(self, value: int) -> None:
        if value < 1:
            raise ValueError("max_concurrency must be >= 1")
        self._gateway.max_concurrency = value

    @property
    def identify_interval(self) -> float:
        """Seconds between two IDENTIFYs of one bucket (Discord: 5); quicker ones get op 9."""
        return self._gateway.identify_interval

    @identify_interval.setter
    def identify_interval(self, value: float) -> None:
        self._gateway.identify_interval = value

    @property
    def identify_rate_limit(self) -> bool:
        """Whether the IDENTIFY interval is enforced: by default only when ``shard_count > 1``
        (single-shard tests restart clients back to back); settable, ``None`` = that default."""
        return self._gateway.identify_rate_limit

    @identify_rate_limit.setter
    def identify_rate_limit(self, value: bool | None) -> None:
        self._gateway.identify_rate_limit = value

    @property
    def identify_clock(self) -> Callable[[], float]:
        """What times IDENTIFY arrivals (``time.monotonic``); a test may place them exactly."""
        return self._gateway.identify_clock

    @identify_clock.setter
    def identify_clock(self, clock: Callable[[], float]) -> None:
        self._gateway.identify_clock = clock

    @property
    def session_start_limit(self) -> JSON:
        """``{total, remaining, reset_after, max_concurrency}`` as ``GET /gateway/bot`` answers."""
        return self._gateway.session_start_limit()

    def shard_for_guild(self, guild_id: int | Guild | None) -> int:
        """``(guild_id >> 22) % shard_count``; ``None`` (DMs) is shard 0."""
        gid = None if guild_id is None else _id(guild_id)
        return shard_of(gid, self._gateway.shard_count)

    @property
    def identify_counts(self) -> dict[int, int]:
        """Accepted IDENTIFYs per shard id (refused ones are not counted)."""
        return dict(self._gateway.identify_counts)

    @property
    def identify_rate_violations(self) -> int:
        """IDENTIFYs refused with op 9 for coming within ``identify_interval`` of their bucket's
        previous one."""
        return self._gateway.identify_rate_violations

    @property
    def overlapping_shard_sessions(self) -> int:
        """IDENTIFYs (counted on arrival, even if refused for the rate limit) for a
        ``[shard_id, num_shards]`` another live, connected session already held."""
        return self._gateway.overlapping_shard_sessions

    def gateway_sessions(self, shard_id: int | None = None) -> list[ShardSession]:
        """Snapshots of the live (not invalidated) sessions, oldest first; ``shard_id``
        filters. A session whose socket dropped stays live (it may RESUME) with
        ``connected`` False."""
        return [s.info() for s in self._gateway.live_sessions(shard_id)]

    @property
    def gateway_closes(self) -> list[GatewayClose]:
        """Every websocket close the stand-in initiated (4004, 4010, 4011, 4014, test drops)."""
        return list(self._gateway.closes)

    # ------------------------------------------------------------------ world setup
    def add_guild(
        self,
        name: str,
        *,
        owner_id: int | None = None,
        shard_id: int | None = None,
        channels: Sequence[str] = (),
        system_channel: str | None = None,
    ) -> Guild:
        """Create a guild with an @everyone role (id == guild id), the bot and an owner: the
        bot joins it (GUILD_CREATE to a connected bot). ``shard_id``: pick an id so the guild
        lands on that shard of ``shard_count``. ``channels``: text channels it already has
        when the bot joins; ``system_channel``: the one of them Discord posts join messages
        in."""
        guild_id = None
        if shard_id is not None:
            guild_id = self._state.snowflake.on_shard(shard_id, self._gateway.shard_count)
        guild = self._state.new_guild(name, owner_id, guild_id=guild_id)
        for channel_name in channels:
            channel = self._state.new_channel(guild.id, channel_name, type=CHANNEL_TEXT)
            if channel_name == system_channel:
                guild.system_channel_id = channel.id
        self.redeliver_guild_create(guild.id)
        return guild

    def redeliver_guild_create(self, guild_id: int) -> None:
        """Send the GUILD_CREATE of the bot joining the guild (again: Discord may deliver an
        event twice)."""
        guild = self._state.get_guild(guild_id)

        def joined(intents: int) -> JSON:
            # A guild the bot has just joined carries no "unavailable" (one that comes back
            # from an outage says false): clients tell a join from a return by it.
            payload = self._state.guild_create_payload(guild, intents)
            payload.pop("unavailable", None)
            return payload

        self._broadcast("GUILD_CREATE", joined, guild_id=guild.id)

    def set_team(self, owner: int | User, members: Sequence[tuple[int | User, str]] = ()) -> None:
        """The application belongs to a team: its owner, and members with their role
        ("admin", "developer" or "read_only"), all accepted."""
        self._state.team = (_id(owner), [(_id(member), role) for member, role in members])

    def remove_bot_from_guild(self, guild_id: int) -> None:
        """The bot is kicked from the guild: GUILD_DELETE (not unavailable) on its shard. Only
        the event: the guild's data stays, for inspection (a new IDENTIFY would see it again)."""
        payload = {"id": str(guild_id)}
        self._broadcast(
            "GUILD_DELETE", lambda i: payload if i & INTENT_GUILDS else None, guild_id=guild_id
        )

    def add_text_channel(
        self, guild_id: int, name: str, *, topic: str | None = None, nsfw: bool = False
    ) -> Channel:
        channel = self._state.new_channel(guild_id, name, type=CHANNEL_TEXT, topic=topic, nsfw=nsfw)
        payload = channel.to_payload()
        self._broadcast(
            "CHANNEL_CREATE", lambda i: payload if i & INTENT_GUILDS else None, guild_id=guild_id
        )
        return channel

    def add_role(self, guild_id: int, name: str, *, permissions: int = 0) -> Role:
        guild = self._state.get_guild(guild_id)
        role = Role(
            id=self._state.snowflake(),
            guild_id=guild_id,
            name=name,
            permissions=permissions,
            position=len(guild.roles),
        )
        guild.roles[role.id] = role
        payload = {"guild_id": str(guild_id), "role": role.to_payload()}
        self._broadcast(
            "GUILD_ROLE_CREATE", lambda i: payload if i & INTENT_GUILDS else None, guild_id=guild_id
        )
        return role

    def add_member(
        self,
        guild_id: int,
        name: str,
        *,
        roles: Sequence[int | Role] = (),
        permissions: int | None = None,
        nick: str | None = None,
        bot: bool = False,
        user_id: int | None = None,
    ) -> User:
        """Add a user to a guild. ``permissions`` overrides the role-computed permissions."""
        state = self._state
        guild = state.get_guild(guild_id)
        if user_id is not None:
            user = state.get_user(user_id)
        else:
            user = User(id=state.snowflake(), username=name, global_name=name.title(), bot=bot)
            state.users[user.id] = user
        guild.members[user.id] = Member(
            user_id=user.id,
            guild_id=guild_id,
            roles=[_id(r) for r in roles],
            nick=nick,
            permissions=permissions,
        )
        payload = {**state.member_payload(guild_id, user.id), "guild_id": str(guild_id)}
        self._broadcast(
            "GUILD_MEMBER_ADD",
            lambda i: payload if i & INTENT_GUILD_MEMBERS else None,
            guild_id=guild_id,
        )
        return user

    def add_thread(
        self,
        channel_id: int | Channel,
        name: str,
        *,
        owner_id: int | User | None = None,
        message: int | Message | None = None,
        private: bool = False,
        archived: bool = False,
        locked: bool = False,
        auto_archive_duration: int = 1440,
    ) -> Channel:
        """A thread a member started in a text channel (THREAD_CREATE is dispatched).

        ``message`` starts a public thread from that message (the thread gets its id, like on
        Discord); otherwise a public (or ``private``) standalone thread. ``owner_id`` defaults
        to the guild owner. The bot is not a member of it.
        """
        state = self._state
        parent = state.get_channel(_id(channel_id))
        if parent.type != CHANNEL_TEXT or parent.guild_id is None:
            raise ValueError("threads can only be started in guild text channels")
        guild = state.get_guild(parent.guild_id)
        owner = guild.owner_id if owner_id is None else _id(owner_id)
        state.get_member(guild.id, owner)
        starter = None
        if message is not None:
            starter = self._live_message(_id(message))
            if starter.channel_id != parent.id or starter.thread_id is not None:
                raise ValueError(f"message {starter.id} cannot start a thread in {parent.id}")
        thread = Channel(
            id=starter.id if starter is not None else state.snowflake(),
            guild_id=guild.id,
            name=name,
            type=CHANNEL_PRIVATE_THREAD if private and starter is None else CHANNEL_PUBLIC_THREAD,
            parent_id=parent.id,
            owner_id=owner,
            auto_archive_duration=auto_archive_duration,
            archived=archived,
            locked=locked,
        )
        state.channels[thread.id] = thread
        state.channel_messages[thread.id] = []
        if starter is not None:
            starter.thread_id = thread.id
        if self._gateway.live_sessions() and not archived:
            state.spawn(state.add_thread(thread, bot_is_member=False))
        state.changed()
        return thread

    def open_dm(self, user_id: int | User) -> Channel:
        """The DM channel between the bot and a user (created once; ``POST /users/@me/channels``
        returns the same one). Use it with ``post_user_message``/``invoke_slash``/... ."""
        channel = self._state.open_dm(_id(user_id))
        self._state.changed()
        return channel

    def set_accepts_dms(self, user_id: int | User, accepts: bool) -> None:
        """``False``: the bot's messages to this user's DM fail with 403 50007, as when a user
        disabled DMs from server members or blocked the bot."""
        self._state.get_user(_id(user_id)).accepts_dms = accepts

    def set_member_roles(
        self, guild_id: int | Guild, user_id: int | User, roles: Sequence[int | Role]
    ) -> Member:
        """Replace a member's roles (like a moderator would); later interactions report the new
        roles and permissions. GUILD_MEMBER_UPDATE is dispatched to sessions with the
        GUILD_MEMBERS intent (and always when the member is the bot, as Discord does).
        A ``permissions`` override given to ``add_member`` keeps winning over roles."""
        state = self._state
        gid, uid = _id(guild_id), _id(user_id)
        guild = state.get_guild(gid)
        member = state.get_member(gid, uid)
        role_ids = [_id(r) for r in roles]
        unknown = [r for r in role_ids if r not in guild.roles or r == gid]
        if unknown:
            raise LookupError(f"{unknown} are not assignable roles of guild {gid}")
        member.roles = list(dict.fromkeys(role_ids))
        payload = {**state.member_payload(gid, uid), "guild_id": str(gid)}
        is_bot = uid == state.bot.id
        self._broadcast(
            "GUILD_MEMBER_UPDATE",
            lambda i: payload if is_bot or i & INTENT_GUILD_MEMBERS else None,
            guild_id=gid,
        )
        return member

    def set_overwrite(
        self,
        channel_id: int | Channel,
        target: int | Role | User | Guild,
        *,
        allow: int = 0,
        deny: int = 0,
    ) -> Channel:
        """Set the permission overwrite of a role (a ``Guild`` or its id: @everyone) or member on
        a text channel, as a moderator would under Edit Channel → Permissions; ``allow`` and
        ``deny`` both 0 removes it. Its threads follow it. CHANNEL_UPDATE is dispatched.
        ``ValueError`` for threads/DMs, non-channel permission bits, or a bit both allowed and
        denied; from then on interactions, posting and thread rules use the new permissions."""
        state = self._state
        channel = state.get_channel(_id(channel_id))
        state.set_overwrite(channel, _id(target), allow, deny)
        payload = channel.to_payload()
        self._broadcast(
            "CHANNEL_UPDATE",
            lambda i: payload if i & INTENT_GUILDS else None,
            guild_id=channel.guild_id,
        )
        return channel

    @property
    def privileged_intents(self) -> int:
        """The privileged intents the application may use (toggled in the developer portal):
        IDENTIFY asking for others closes 4014, and the application's flags say which."""
        return self._gateway.allowed_privileged_intents

    @privileged_intents.setter
    def privileged_intents(self, intents: int) -> None:
        self._gateway.allowed_privileged_intents = intents

    def channel_permissions(self, channel_id: int | Channel, user_id: int | User) -> int:
        """A user's permissions in a channel or thread as the fake computes them now (what
        interactions there report as ``member.permissions``/``app_permissions``)."""
        return self._state.channel_permissions(
            self._state.get_channel(_id(channel_id)), _id(user_id)
        )

    def _broadcast(
        self, event: str, data: Callable[[int], JSON | None], *, guild_id: int | None
    ) -> None:
        if self._gateway.live_sessions():
            self._state.spawn(self._gateway.dispatch(event, data, guild_id=guild_id))
        self._state.changed()

    # ------------------------------------------------------------------ inspection
    def guild(self, guild_id: int) -> Guild:
        return self._state.get_guild(guild_id)

    def channel(self, channel_id: int | Channel) -> Channel:
        """A channel, thread or DM as the fake stores it now (``name``, ``archived``, ``locked``,
        ``nsfw``, ``topic``, ``rate_limit_per_user``, ...)."""
        return self._state.get_channel(_id(channel_id))

    def dm_channel(self, user_id: int | User) -> Channel | None:
        """The DM channel between the bot and a user, if either side opened one."""
        channel_id = self._state.dm_channels.get(_id(user_id))
        return None if channel_id is None else self._state.channels[channel_id]

    async def edit_channel(self, channel_id: int | Channel, **changes: Any) -> Channel:
        """Edit a channel or thread as a moderator in the Discord client would, e.g.
        ``await fake.edit_channel(thread, archived=True, locked=True)``; takes the fields of
        ``PATCH /channels/{id}`` and dispatches THREAD_UPDATE / CHANNEL_UPDATE."""
        state = self._state
        channel = state.get_channel(_id(channel_id))
        try:
            state.edit_channel(channel, changes, actor_id=None)
        except DiscordHTTPError as error:
            raise ValueError(error.message) from None
        await state.channel_updated(channel)
        return channel

    def threads(self, parent_id: int | None = None) -> list[Channel]:
        return [
            c
            for c in self._state.channels.values()
            if c.is_thread and (parent_id is None or c.parent_id == parent_id)
        ]

    def commands(self, guild_id: int | None = None) -> list[JSON]:
        """Registered commands: global ones, or those of ``guild_id``."""
        return list(self._state.commands_for(guild_id))

    def command(self, name: str, *, guild_id: int | None = None, type: int = 1) -> JSON:
        return self._state.find_command(name, guild_id, type)

    def messages(
        self, channel_id: int, *, include_deleted: bool = False, include_ephemeral: bool = True
    ) -> list[Message]:
        """Messages of a channel, oldest first."""
        messages = [
            self._state.messages[m] for m in self._state.channel_messages.get(channel_id, [])
        ]
        return [
            m
            for m in messages
            if (include_deleted or not m.deleted) and (include_ephemeral or not m.ephemeral)
        ]

    def message(self, message_id: int) -> Message:
        return self._state.messages[message_id]

    @property
    def requests(self) -> list[LoggedRequest]:
        """Every REST call, in arrival order."""
        return self._state.requests

    @property
    def unhandled_requests(self) -> list[LoggedRequest]:
        """Calls to routes the fake does not implement (answered 404)."""
        return self._state.unhandled_requests

    @property
    def cdn_requests(self) -> list[str]:
        return self._state.cdn_requests

    @property
    def typing(self) -> list[tuple[int, int]]:
        """(channel id, user id) of every typing indicator."""
        return self._state.typing

    @property
    def interactions(self) -> list[InteractionHandle]:
        return list(self._state.interactions.values())

    @property
    def identify_count(self) -> int:
        return self._gateway.identify_count

    @property
    def resume_count(self) -> int:
        return self._gateway.resume_count

    @property
    def gateway_connected(self) -> bool:
        """Some session (of any shard) is connected and READY."""
        return self._gateway.ready_session(any_shard=True) is not None

    @property
    def last_identify(self) -> JSON | None:
        """The last IDENTIFY payload (``intents``, ``properties``, ...)."""
        return self._gateway.last_identify

    # ------------------------------------------------------------------ waiting
    async def wait_for(self, predicate: Callable[[], T | None], timeout: float = 5.0) -> T:
        """Wait until ``predicate()`` is truthy and return its value.

        The predicate is re-evaluated whenever the fake's state changes (REST call, gateway
        event, injection), so it should look at fake state, not at the bot's own variables.
        """
        return await self._state.wait_for(predicate, timeout=timeout)

    async def wait_for_message(
        self,
        predicate: Callable[[Message], Any] | None = None,
        *,
        channel_id: int | None = None,
        after: int | Message | None = None,
        timeout: float = 5.0,
    ) -> Message:
        """The first live message in ``channel_id`` newer than ``after`` matching ``predicate``."""
        after_id = 0 if after is None else _id(after)

        def find() -> Message | None:
            for message in self._state.messages.values():
                if message.deleted or message.id <= after_id:
                    continue
                if channel_id is not None and message.channel_id != channel_id:
                    continue
                if predicate is None or predicate(message):
                    return message
            return None

        return await self.wait_for(find, timeout=timeout)

    async def wait_until_connected(
        self, timeout: float = 5.0, *, shard_id: int | None = None
    ) -> None:
        """Wait until a session of ``shard_id`` is connected; ``None``: one of every shard in
        ``range(shard_count)`` (with one shard: the bot's session)."""
        gateway = self._gateway

        def ready() -> bool:
            if shard_id is not None:
                return gateway.shard_connected(shard_id)
            return all(gateway.shard_connected(s) for s in range(gateway.shard_count))

        await self.wait_for(ready, timeout=timeout)

    # ------------------------------------------------------------------ gateway knobs
    async def drop_gateway(
        self, *, code: int = 4000, resumable: bool = True, shard_id: int | None = None
    ) -> None:
        """Close the bot's websockets (``shard_id``: only that shard's). discord.py RESUMEs
        (or re-IDENTIFYs if not resumable)."""
        await self._gateway.drop(code=code, resumable=resumable, shard_id=shard_id)

    async def request_gateway_reconnect(self, *, shard_id: int | None = None) -> None:
        """Send opcode 7 RECONNECT (``shard_id``: only to that shard's sessions)."""
        await self._gateway.request_reconnect(shard_id=shard_id)

    # ------------------------------------------------------------------ interactions
    async def invoke_slash(
        self,
        user_id: int | User,
        channel_id: int | Channel,
        command: str,
        options: Mapping[str, OptionValue] | None = None,
        *,
        subcommand: str | Sequence[str] | None = None,
        locale: str = "en-US",
        ignore_default_permissions: bool = False,
    ) -> InteractionHandle:
        """Run ``/command`` as a user. Sub-commands: ``"flux pro"`` or ``subcommand=("pro",)``.

        The data is built from the *registered* command; unknown/missing-required options,
        values outside ``choices``, users lacking ``default_member_permissions`` and commands
        unavailable in the channel (DM, age-restricted, archived thread) raise.
        ``ignore_default_permissions=True`` acts as if a server admin had granted the user the
        command under Server Settings → Integrations, so the bot's own run-time check is tested.
        """
        uid, channel = _id(user_id), self._state.get_channel(_id(channel_id))
        registered, chain, definitions = self._slash_path(
            uid, channel, command, subcommand, ignore_default_permissions
        )
        resolved: JSON = {}
        values = self._build_options(definitions, dict(options or {}), resolved, channel, uid)
        data = self._slash_data(registered, chain, values)
        if resolved:
            data["resolved"] = resolved
        return await self._interact(
            INTERACTION_APPLICATION_COMMAND, uid, channel, data, locale=locale
        )

    async def invoke_autocomplete(
        self,
        user_id: int | User,
        channel_id: int | Channel,
        command: str,
        options: Mapping[str, OptionValue] | None = None,
        *,
        focused: str,
        locale: str = "en-US",
    ) -> InteractionHandle:
        """A member typing in an autocomplete option of ``/command`` (``"flux klein-4b"``):
        an APPLICATION_COMMAND_AUTOCOMPLETE interaction (type 4) whose ``focused`` option
        carries the text typed so far (always a string, as Discord sends it), with the other
        options filled in so far (required ones may still be missing). The bot answers with
        callback 8 and at most 25 ``choices`` within the 3 s deadline; read them from the
        handle's ``choices`` once ``await response()`` returns. ``LookupError``/``ValueError``
        for an unknown option, one that is not ``autocomplete``, or an attachment option
        (Discord's client sends none with autocomplete)."""
        uid, channel = _id(user_id), self._state.get_channel(_id(channel_id))
        registered, chain, definitions = self._slash_path(uid, channel, command, None, False)
        given = dict(options or {})
        known = {d["name"]: d for d in definitions}
        target = known.get(focused)
        if target is None:
            raise LookupError(f"/{command}: no option {focused!r}")
        if not target.get("autocomplete"):
            raise ValueError(f"/{command}: option {focused!r} has no autocomplete")
        typed = str(given.pop(focused, ""))
        if any(isinstance(value, Upload) for value in given.values()):
            raise ValueError("attachments are not sent with autocomplete interactions")
        # Everything but the focused option as a command would carry it, required or not.
        optional = [{**d, "required": False} for d in definitions if d["name"] != focused]
        values = self._build_options(optional, given, {}, channel, uid)
        values.append({"name": focused, "type": target["type"], "value": typed, "focused": True})
        data = self._slash_data(registered, chain, values)
        return await self._interact(INTERACTION_AUTOCOMPLETE, uid, channel, data, locale=locale)

    def _slash_path(
        self,
        uid: int,
        channel: Channel,
        command: str,
        subcommand: str | Sequence[str] | None,
        ignore_default_permissions: bool,
    ) -> tuple[JSON, list[JSON], list[JSON]]:
        """The registered command a user may run here, its sub-command chain, and the
        option definitions of the leaf."""
        path = command.split()
        if isinstance(subcommand, str):
            path += subcommand.split()
        elif subcommand is not None:
            path += list(subcommand)
        registered = self._usable_command(
            path[0], channel, uid, 1, ignore_default_permissions=ignore_default_permissions
        )
        chain: list[JSON] = []
        definitions: list[JSON] = registered.get("options", [])
        for name in path[1:]:
            match = [d for d in definitions if d["name"] == name and d["type"] in (1, 2)]
            if not match:
                raise LookupError(f"/{' '.join(path)}: no sub-command {name!r}")
            chain.append(match[0])
            definitions = match[0].get("options", [])
        if any(d["type"] in (1, 2) for d in definitions):
            names = [d["name"] for d in definitions]
            raise ValueError(f"/{' '.join(path)} needs a sub-command, one of {names}")
        return registered, chain, definitions

    @staticmethod
    def _slash_data(registered: JSON, chain: list[JSON], values: list[JSON]) -> JSON:
        for parent in reversed(chain):
            values = [{"name": parent["name"], "type": parent["type"], "options": values}]
        data: JSON = {"id": registered["id"], "name": registered["name"], "type": 1}
        if values:
            data["options"] = values
        if "guild_id" in registered:
            data["guild_id"] = registered["guild_id"]
        return data

    async def invoke_message_command(
        self,
        user_id: int | User,
        channel_id: int | Channel,
        name: str,
        target_message_id: int | Message,
        *,
        ignore_default_permissions: bool = False,
    ) -> InteractionHandle:
        """Run a message context-menu command (type 3) on ``target_message_id``."""
        uid, channel = _id(user_id), self._state.get_channel(_id(channel_id))
        target = self._live_message(_id(target_message_id))
        registered = self._usable_command(
            name, channel, uid, 3, ignore_default_permissions=ignore_default_permissions
        )
        data: JSON = {
            "id": registered["id"],
            "name": registered["name"],
            "type": 3,
            "target_id": str(target.id),
            "resolved": {"messages": {str(target.id): self._state.message_payload(target)}},
        }
        if "guild_id" in registered:
            data["guild_id"] = registered["guild_id"]
        return await self._interact(INTERACTION_APPLICATION_COMMAND, uid, channel, data)

    async def invoke_user_command(
        self,
        user_id: int | User,
        channel_id: int | Channel,
        name: str,
        target_user_id: int | User,
        *,
        ignore_default_permissions: bool = False,
    ) -> InteractionHandle:
        """Run a user context-menu command (type 2) on ``target_user_id``."""
        uid, channel = _id(user_id), self._state.get_channel(_id(channel_id))
        registered = self._usable_command(
            name, channel, uid, 2, ignore_default_permissions=ignore_default_permissions
        )
        resolved: JSON = {}
        target = self._resolve_user(_id(target_user_id), resolved, channel)
        data: JSON = {
            "id": registered["id"],
            "name": registered["name"],
            "type": 2,
            "target_id": target,
            "resolved": resolved,
        }
        if "guild_id" in registered:
            data["guild_id"] = registered["guild_id"]
        return await self._interact(INTERACTION_APPLICATION_COMMAND, uid, channel, data)

    async def click(
        self, user_id: int | User, message_id: int | Message, custom_id: str
    ) -> InteractionHandle:
        """Press the button ``custom_id`` on a message (must exist and not be disabled)."""
        uid, message = _id(user_id), self._live_message(_id(message_id))
        component = self._component(message, custom_id, uid)
        if component["type"] != 2:
            raise ValueError(
                f"{custom_id!r} is a component of type {component['type']}; use select()"
            )
        data = {"custom_id": custom_id, "component_type": 2}
        return await self._interact(
            INTERACTION_COMPONENT,
            uid,
            self._state.get_channel(message.channel_id),
            data,
            source=message,
        )

    async def select(
        self,
        user_id: int | User,
        message_id: int | Message,
        custom_id: str,
        values: Sequence[str | int | User | Role | Channel],
    ) -> InteractionHandle:
        """Choose ``values`` in a select menu on a message."""
        uid, message = _id(user_id), self._live_message(_id(message_id))
        component = self._component(message, custom_id, uid)
        if component["type"] not in SELECT_TYPES:
            raise ValueError(f"{custom_id!r} is not a select menu")
        channel = self._state.get_channel(message.channel_id)
        raw = [str(_id(v)) if not isinstance(v, str) else v for v in values]
        if not component.get("min_values", 1) <= len(raw) <= component.get("max_values", 1):
            raise ValueError(
                f"{custom_id!r} accepts {component.get('min_values', 1)}-"
                f"{component.get('max_values', 1)} values, got {len(raw)}"
            )
        if component["type"] == 3:
            allowed = {o["value"] for o in component.get("options", [])}
            if not set(raw) <= allowed:
                raise ValueError(f"{set(raw) - allowed} are not options of {custom_id!r}")
        data: JSON = {"custom_id": custom_id, "component_type": component["type"], "values": raw}
        if component["type"] != 3:
            resolved: JSON = {}
            for value in raw:
                self._resolve_snowflake(int(value), resolved, channel, uid)
            data["resolved"] = resolved
        return await self._interact(INTERACTION_COMPONENT, uid, channel, data, source=message)

    async def submit_modal(
        self,
        user_id: int | User,
        channel_id: int | Channel,
        custom_id: str,
        values: Mapping[str, str | Sequence[str]],
        *,
        message_id: int | Message | None = None,
    ) -> InteractionHandle:
        """Submit a modal. If the bot opened it (callback 9), the submission mirrors its layout
        (action rows or labels) and ``values`` are checked against its inputs."""
        uid, channel = _id(user_id), self._state.get_channel(_id(channel_id))
        opener = self._state.open_modals.pop((uid, custom_id), None)
        if opener is not None and opener.modal is not None:
            components = self._modal_submission(opener.modal["components"], dict(values))
        else:
            components = [
                {"type": 1, "components": [{"type": 4, "custom_id": key, "value": value}]}
                for key, value in values.items()
            ]
        source_id = _id(message_id) if message_id is not None else None
        if source_id is None and opener is not None:
            source_id = opener.source_message_id
        source = self._live_message(source_id) if source_id is not None else None
        data = {"custom_id": custom_id, "components": components}
        return await self._interact(INTERACTION_MODAL_SUBMIT, uid, channel, data, source=source)

    # ------------------------------------------------------------------ user messages
    async def post_user_message(
        self,
        user_id: int | User,
        channel_id: int | Channel,
        content: str = "",
        *,
        attachments: Sequence[Upload] = (),
        reply_to: int | Message | None = None,
        mention_bot: bool = False,
        reply_ping: bool = True,
        embeds: Sequence[JSON] = (),
    ) -> Message:
        """A guild member (or the DM's recipient) posts a message; MESSAGE_CREATE is dispatched.

        ``mention_bot`` prepends ``<@bot>`` unless already present; replies ping the replied-to
        author unless ``reply_ping=False`` (like the Discord client's toggle). In threads:
        posting un-archives an archived thread; a locked thread raises ``PermissionError``
        unless the user has MANAGE_THREADS (and a locked archived thread always does).
        """
        state = self._state
        uid, channel = _id(user_id), state.get_channel(_id(channel_id))
        await state.drain()  # deliver earlier world-setup events first
        unarchive = False
        if channel.guild_id is None:
            if channel.recipient_id != uid:
                raise PermissionError(f"user {uid} is not the recipient of DM {channel.id}")
        else:
            state.get_member(channel.guild_id, uid)
            try:
                state.check_can_post(channel, uid, with_files=bool(attachments))
            except DiscordHTTPError as error:
                send = "SEND_MESSAGES_IN_THREADS" if channel.is_thread else "SEND_MESSAGES"
                needs = "VIEW_CHANNEL" if error.code == MISSING_ACCESS else send
                if needs == send and attachments:
                    needs += " (and ATTACH_FILES for files)"
                raise PermissionError(
                    f"user {uid} cannot post in channel {channel.id}: lacks {needs}"
                ) from None
            try:
                unarchive = state.check_thread_post(channel, uid)
            except DiscordHTTPError as error:
                raise PermissionError(
                    f"user {uid} cannot post in thread {channel.id}: {error.message}"
                ) from None
        mention = f"<@{state.bot.id}>"
        if mention_bot and mention not in content and f"<@!{state.bot.id}>" not in content:
            content = f"{mention} {content}".strip()
        message = Message(
            id=state.snowflake(),
            channel_id=channel.id,
            guild_id=channel.guild_id,
            author_id=uid,
            type=MSG_DEFAULT,
            content=content,
            embeds=[dict(e) for e in embeds],
            attachments=[state.store_upload(upload, channel.id) for upload in attachments],
        )
        reply_author = None
        if reply_to is not None:
            target = self._live_message(_id(reply_to))
            if target.channel_id != channel.id:
                raise ValueError(f"message {target.id} is not in channel {channel.id}")
            message.type = MSG_REPLY
            message.message_reference = message_reference(target)
            reply_author = target.author_id if reply_ping and target.author_id != uid else None
        message.mentions, message.mention_roles = state.resolve_mentions(
            content, None, reply_author
        )
        if unarchive:
            await state.unarchive_thread(channel)
        return await state.add_message(message)

    async def delete_message(self, message_id: int | Message) -> None:
        """Delete a message as a moderator/author would (MESSAGE_DELETE is dispatched)."""
        await self._state.delete_message(self._live_message(_id(message_id)))

    # ------------------------------------------------------------------ internals
    def _live_message(self, message_id: int) -> Message:
        message = self._state.messages.get(message_id)
        if message is None or message.deleted:
            raise LookupError(f"no live message {message_id}")
        return message

    def _component(self, message: Message, custom_id: str, user_id: int) -> JSON:
        if message.ephemeral and message.visible_to != user_id:
            raise PermissionError(f"message {message.id} is ephemeral for another user")
        try:
            component = message.component(custom_id)
        except KeyError:
            raise LookupError(
                f"message {message.id} has no component {custom_id!r}; it has {message.custom_ids}"
            ) from None
        if component.get("disabled"):
            raise ValueError(f"component {custom_id!r} is disabled")
        return component

    def _usable_command(
        self,
        name: str,
        channel: Channel,
        user_id: int,
        type_: int,
        *,
        ignore_default_permissions: bool,
    ) -> JSON:
        """The registered command, if the Discord client would offer it to this user here."""
        state = self._state
        if channel.guild_id is None:
            try:
                command = state.find_command(name, None, type_)
            except LookupError:
                in_guilds = [
                    g
                    for g, cmds in state.guild_commands.items()
                    if any(c["name"] == name for c in cmds)
                ]
                if not in_guilds:
                    raise
                raise PermissionError(
                    f"{name!r} is registered only in guilds {in_guilds}; guild commands are "
                    "never available in DMs (sync it globally)"
                ) from None
        else:
            command = state.find_command(name, channel.guild_id, type_)
        self._check_can_use(
            command, channel, user_id, ignore_default_permissions=ignore_default_permissions
        )
        return command

    def _check_can_use(
        self,
        command: JSON,
        channel: Channel,
        user_id: int,
        *,
        ignore_default_permissions: bool = False,
    ) -> None:
        state, name = self._state, command["name"]
        contexts = command.get("contexts")
        if channel.guild_id is None:
            # The bot's DM: ``contexts`` decides (legacy ``dm_permission`` when it is null);
            # ``default_member_permissions`` only restricts use inside guilds.
            if channel.recipient_id != user_id:
                raise PermissionError(f"user {user_id} is not the recipient of DM {channel.id}")
            if contexts is not None:
                allowed = CONTEXT_BOT_DM in contexts
            else:
                allowed = command.get("dm_permission") is not False
            if not allowed:
                raise PermissionError(f"{name!r} is guild-only: Discord hides it in DMs")
            if 0 not in (command.get("integration_types") or [0]):
                raise PermissionError(f"{name!r} is not available to guild installs")
            return
        state.get_member(channel.guild_id, user_id)
        if contexts is not None and CONTEXT_GUILD not in contexts:
            raise PermissionError(f"{name!r} is not available in guilds")
        if command.get("nsfw") and not self._is_nsfw(channel):
            raise PermissionError(f"{name!r} is age-restricted and channel {channel.id} is not")
        # The Discord client offers commands by the member's permissions *in this channel*.
        have = state.channel_permissions(channel, user_id)
        if not have & VIEW_CHANNEL:
            raise PermissionError(f"user {user_id} cannot see channel {channel.id}")
        if not have & USE_APPLICATION_COMMANDS:
            raise PermissionError(
                f"user {user_id} lacks USE_APPLICATION_COMMANDS in channel {channel.id}"
            )
        required = command.get("default_member_permissions")
        # "0" is no permission anyone could hold: administrators only.
        if (
            required is not None
            and not ignore_default_permissions
            and not have & ADMINISTRATOR
            and (int(required) == 0 or have & int(required) != int(required))
        ):
            raise PermissionError(
                f"user {user_id} lacks default_member_permissions {required} for "
                f"{name!r} (Discord would not show it)"
            )

    def _is_nsfw(self, channel: Channel) -> bool:
        """Age-restricted: the channel's flag; threads inherit their parent's."""
        if channel.is_thread and channel.parent_id is not None:
            return self._state.get_channel(channel.parent_id).nsfw
        return channel.nsfw

    def _build_options(
        self,
        definitions: list[JSON],
        given: dict[str, OptionValue],
        resolved: JSON,
        channel: Channel,
        invoker_id: int,
    ) -> list[JSON]:
        known = {d["name"]: d for d in definitions}
        unknown = set(given) - set(known)
        if unknown:
            raise ValueError(f"unknown options {sorted(unknown)}; the command has {sorted(known)}")
        missing = [d["name"] for d in definitions if d.get("required") and d["name"] not in given]
        if missing:
            raise ValueError(f"missing required options {missing}")
        built = []
        for definition in definitions:
            name = definition["name"]
            if name not in given:
                continue
            built.append(
                {
                    "name": name,
                    "type": definition["type"],
                    "value": self._option_value(
                        definition, given[name], resolved, channel, invoker_id
                    ),
                }
            )
        return built

    def _option_value(
        self,
        definition: JSON,
        value: OptionValue,
        resolved: JSON,
        channel: Channel,
        invoker_id: int,
    ) -> Any:
        type_, name = int(definition["type"]), definition["name"]
        result: Any
        if type_ == 3:
            result = str(value)
            if (
                not definition.get("min_length", 0)
                <= len(result)
                <= definition.get("max_length", 6000)
            ):
                raise ValueError(f"option {name!r}: length outside min_length/max_length")
        elif type_ == 4:
            if isinstance(value, bool) or not isinstance(value, int | str):
                raise ValueError(f"option {name!r} needs an integer")
            result = int(value)
        elif type_ == 10:
            if isinstance(value, bool) or not isinstance(value, int | float | str):
                raise ValueError(f"option {name!r} needs a number")
            result = float(value)
        elif type_ == 5:
            result = bool(value)
        elif type_ == 11:
            if not isinstance(value, Upload):
                raise ValueError(f"option {name!r} is an ATTACHMENT: pass an Upload")
            attachment = self._state.store_upload(value, channel.id, ephemeral=True)
            resolved.setdefault("attachments", {})[str(attachment.id)] = attachment.to_payload()
            result = str(attachment.id)
        elif type_ in (6, 7, 8, 9):
            if isinstance(value, float | bool | Upload):
                raise ValueError(f"option {name!r} needs an id or a User/Role/Channel")
            snowflake = _id(value)
            kind = self._resolve_snowflake(snowflake, resolved, channel, invoker_id)
            expected = {6: {"user"}, 7: {"channel"}, 8: {"role"}, 9: {"user", "role"}}[type_]
            if kind not in expected:
                raise ValueError(f"option {name!r}: {snowflake} is a {kind}, expected {expected}")
            result = str(snowflake)
        else:
            raise ValueError(f"option {name!r} has unsupported type {type_}")
        if type_ in (4, 10):
            low, high = definition.get("min_value"), definition.get("max_value")
            if (low is not None and result < low) or (high is not None and result > high):
                raise ValueError(f"option {name!r}={result} outside [{low}, {high}]")
        choices = definition.get("choices")
        if choices and result not in [c["value"] for c in choices]:
            raise ValueError(f"option {name!r}={result!r} is not one of the choices {choices}")
        return result

    def _resolve_user(self, user_id: int, resolved: JSON, channel: Channel) -> str:
        state, guild_id = self._state, channel.guild_id
        resolved.setdefault("users", {})[str(user_id)] = state.user_payload(user_id)
        if guild_id is not None and user_id in state.get_guild(guild_id).members:
            # Resolved members carry their permissions in the channel the interaction is in.
            member = state.member_payload(guild_id, user_id, with_user=False, in_channel=channel)
            resolved.setdefault("members", {})[str(user_id)] = member
        return str(user_id)

    def _resolve_snowflake(
        self, snowflake: int, resolved: JSON, channel: Channel, invoker_id: int
    ) -> str:
        state = self._state
        guild = None if channel.guild_id is None else state.get_guild(channel.guild_id)
        if snowflake in state.users:
            self._resolve_user(snowflake, resolved, channel)
            return "user"
        if guild is not None and snowflake in guild.roles:
            resolved.setdefault("roles", {})[str(snowflake)] = guild.roles[snowflake].to_payload()
            return "role"
        if snowflake in state.channels:
            # Discord: the invoking user's permissions in the resolved channel.
            payload = state.channel_payload(snowflake, for_user=invoker_id)
            resolved.setdefault("channels", {})[str(snowflake)] = payload
            return "channel"
        raise LookupError(f"{snowflake} is not a known user, role or channel")

    def _modal_submission(
        self, layout: list[JSON], values: dict[str, str | Sequence[str]]
    ) -> list[JSON]:
        remaining = dict(values)

        def submit(component: JSON) -> JSON:
            type_ = component.get("type")
            if type_ == 1:
                return {
                    "type": 1,
                    "components": [submit(c) for c in component.get("components", [])],
                }
            if type_ == 18:
                return {
                    "type": 18,
                    "id": component.get("id"),
                    "component": submit(component["component"]),
                }
            custom_id = component.get("custom_id")
            if custom_id is None:
                return {"type": type_, "id": component.get("id")}
            value = remaining.pop(custom_id, None)
            if type_ == 4:
                text = "" if value is None else str(value)
                if component.get("required", True) and not text:
                    raise ValueError(f"modal input {custom_id!r} is required")
                low, high = component.get("min_length", 0), component.get("max_length", 4000)
                if text and not low <= len(text) <= high:
                    raise ValueError(f"modal input {custom_id!r} must be {low}-{high} characters")
                return {"type": 4, "custom_id": custom_id, "value": text}
            chosen = [] if value is None else [value] if isinstance(value, str) else list(value)
            return {"type": type_, "custom_id": custom_id, "values": chosen}

        submitted = [submit(c) for c in layout]
        if remaining:
            raise ValueError(f"modal has no inputs {sorted(remaining)}")
        return submitted

    async def _interact(
        self,
        type_: int,
        user_id: int,
        channel: Channel,
        data: JSON,
        *,
        source: Message | None = None,
        locale: str = "en-US",
    ) -> InteractionHandle:
        state = self._state
        guild_id = channel.guild_id
        # The session that will receive it: the one of the guild's shard (DMs: shard 0).
        await self.wait_for(lambda: self._gateway.ready_session(guild_id))
        await state.drain()  # deliver earlier world-setup events (roles, members) first
        interaction_id = state.snowflake()
        token = "aW50ZXJhY3Rpb24" + secrets.token_urlsafe(48)
        payload: JSON = {
            "id": str(interaction_id),
            "application_id": str(state.application_id),
            "type": type_,
            "data": data,
            "channel_id": str(channel.id),
            "channel": state.channel_payload(channel.id, for_user=user_id),
            "token": token,
            "version": 1,
            "app_permissions": str(state.channel_permissions(channel, state.bot.id)),
            "locale": locale,
            "entitlements": [],
            "entitlement_sku_ids": [],
            "attachment_size_limit": state.attachment_size_limit,
        }
        if guild_id is None:
            if channel.recipient_id != user_id:
                raise PermissionError(f"user {user_id} is not the recipient of DM {channel.id}")
            payload.update(
                user=state.user_payload(user_id),
                authorizing_integration_owners={"0": "0"},
                context=CONTEXT_BOT_DM,
            )
        else:
            state.get_member(guild_id, user_id)
            if channel.is_thread and channel.archived:
                raise PermissionError(
                    f"thread {channel.id} is archived: Discord users cannot interact in it"
                )
            if not state.channel_permissions(channel, user_id) & VIEW_CHANNEL:
                raise PermissionError(f"user {user_id} cannot see channel {channel.id}")
            payload.update(
                guild_id=str(guild_id),
                guild={"id": str(guild_id), "locale": "en-US", "features": []},
                # Discord: the member's permissions in this channel, overwrites included.
                member=state.member_payload(guild_id, user_id, in_channel=channel),
                guild_locale="en-US",
                authorizing_integration_owners={"0": str(guild_id)},
                context=CONTEXT_GUILD,
            )
        if source is not None:
            payload["message"] = state.message_payload(source)
        handle = InteractionHandle(
            state,
            id=interaction_id,
            token=token,
            type=type_,
            user_id=user_id,
            channel_id=channel.id,
            guild_id=guild_id,
            payload=payload,
            source_message_id=None if source is None else source.id,
        )
        handle.created_monotonic = time.monotonic()
        state.interactions[interaction_id] = handle
        state.interactions_by_token[token] = handle
        if state.interaction_delivery_delay > 0:
            await asyncio.sleep(state.interaction_delivery_delay)  # a slow gateway, modelled
        await self._gateway.dispatch_interaction(payload)
        await state.notify()
        return handle
