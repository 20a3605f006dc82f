"""The fake gateway: HELLO, IDENTIFY/READY/GUILD_CREATE, heartbeats, RESUME and dispatch.

Sharding (https://discord.com/developers/docs/topics/gateway#sharding): every session holds one
``[shard_id, num_shards]`` pair and receives only the events of its guilds,
``(guild_id >> 22) % num_shards == shard_id``; DMs belong to shard 0.

Frames are sent as plain JSON text; discord.py accepts those even though it asks for
``compress=zlib-stream`` (it only inflates binary frames).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web

from ._util import INTENT_GUILD_MEMBERS, JSON, PRIVILEGED_INTENTS, application_flags, dumps
from .state import DiscordState

OP_DISPATCH = 0
OP_HEARTBEAT = 1
OP_IDENTIFY = 2
OP_PRESENCE_UPDATE = 3
OP_RESUME = 6
OP_RECONNECT = 7
OP_REQUEST_GUILD_MEMBERS = 8
OP_INVALID_SESSION = 9
OP_HELLO = 10
OP_HEARTBEAT_ACK = 11

CLOSE_INVALID_SHARD = 4010
CLOSE_SHARDING_REQUIRED = 4011
#: Discord's daily session start budget (``session_start_limit.total``) and its window.
SESSION_START_TOTAL = 1000
SESSION_START_WINDOW_MS = 86_400_000

#: An event payload, or a function of the receiving session's intents (None = not delivered).
EventData = JSON | Callable[[int], JSON | None]


def shard_of(guild_id: int | None, num_shards: int) -> int:
    """The shard a guild's events go to (Discord's formula); DMs (``None``) are shard 0."""
    return 0 if guild_id is None else (guild_id >> 22) % num_shards


@dataclass
class GatewaySession:
    session_id: str
    intents: int
    shard_id: int = 0
    num_shards: int = 1
    seq: int = 0
    #: Every dispatched frame, kept so a RESUME can replay what the client missed.
    backlog: list[tuple[int, str]] = field(default_factory=list)
    ws: web.WebSocketResponse | None = None
    ready: bool = False
    invalidated: bool = False
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    #: (event name, payload) of every dispatched event, for tests asking who got what.
    dispatched: list[tuple[str, JSON]] = field(default_factory=list)

    @property
    def connected(self) -> bool:
        return self.ws is not None and not self.ws.closed and self.ready

    @property
    def shard(self) -> tuple[int, int]:
        return (self.shard_id, self.num_shards)

    def owns(self, guild_id: int | None) -> bool:
        """Whether events about this guild (``None``: a DM) belong to this session's shard."""
        return shard_of(guild_id, self.num_shards) == self.shard_id

    def info(self) -> ShardSession:
        return ShardSession(
            session_id=self.session_id,
            shard_id=self.shard_id,
            num_shards=self.num_shards,
            intents=self.intents,
            connected=self.connected,
            dispatched=list(self.dispatched),
        )


@dataclass(frozen=True)
class ShardSession:
    """A snapshot of one gateway session, as ``FakeDiscord.gateway_sessions()`` returns it."""

    session_id: str
    shard_id: int
    num_shards: int
    intents: int
    #: The websocket is open and READY (or RESUMED) was sent.
    connected: bool
    #: (event name, payload) of every event dispatched to it, oldest first.
    dispatched: list[tuple[str, JSON]]

    @property
    def shard(self) -> tuple[int, int]:
        return (self.shard_id, self.num_shards)

    @property
    def event_names(self) -> list[str]:
        return [name for name, _ in self.dispatched]

    def events(self, name: str) -> list[JSON]:
        """Payloads of the dispatched events called ``name`` (e.g. ``"MESSAGE_CREATE"``)."""
        return [payload for event, payload in self.dispatched if event == name]


@dataclass(frozen=True)
class GatewayClose:
    """A websocket close the stand-in initiated (bad token, bad shard, test drops, ...)."""

    code: int
    reason: str
    #: The IDENTIFY's ``[shard_id, num_shards]`` if it carried one (or the session's).
    shard: tuple[int, int] | None


@dataclass
class GatewayConnection:
    ws: web.WebSocketResponse
    path: str
    query: dict[str, str]
    session: GatewaySession | None = None
    dropped: bool = False


class GatewayServer:
    def __init__(
        self,
        state: DiscordState,
        *,
        heartbeat_interval_ms: int = 41250,
        shard_count: int = 1,
        max_concurrency: int = 1,
        identify_interval: float = 5.0,
        identify_rate_limit: bool | None = None,
    ) -> None:
        self.state = state
        self.heartbeat_interval_ms = heartbeat_interval_ms
        #: Shards Discord wants (``GET /gateway/bot``); > 1 makes ``num_shards`` mandatory.
        self.shard_count = shard_count
        #: IDENTIFY buckets (``shard_id % max_concurrency``), one IDENTIFY each per interval.
        self.max_concurrency = max_concurrency
        self.identify_interval = identify_interval
        #: None: enforced only when sharding (``shard_count > 1``), so single-shard tests may
        #: restart clients back to back as they always did.
        self._identify_rate_limit = identify_rate_limit
        #: bucket -> `identify_clock` time of its last accepted IDENTIFY.
        self._bucket_identified_at: dict[int, float] = {}
        #: What times IDENTIFY arrivals (tests may replace it to place arrivals exactly).
        self.identify_clock: Callable[[], float] = time.monotonic
        self._started_monotonic = time.monotonic()
        self.identify_counts: dict[int, int] = {}
        self.identify_rate_violations = 0
        self.overlapping_shard_sessions = 0
        self.closes: list[GatewayClose] = []
        self.sessions: dict[str, GatewaySession] = {}
        self.connections: list[GatewayConnection] = []
        #: Intents the "developer portal" allows; requesting others closes with 4014.
        self.allowed_privileged_intents = PRIVILEGED_INTENTS
        self.identify_count = 0
        self.resume_count = 0
        self.heartbeat_count = 0
        self.last_identify: JSON | None = None
        self.presence: JSON | None = None

    # ------------------------------------------------------------------ public helpers
    @property
    def identify_rate_limit(self) -> bool:
        if self._identify_rate_limit is None:
            return self.shard_count > 1
        return self._identify_rate_limit

    @identify_rate_limit.setter
    def identify_rate_limit(self, value: bool | None) -> None:
        self._identify_rate_limit = value

    def session_start_limit(self) -> JSON:
        elapsed_ms = int((time.monotonic() - self._started_monotonic) * 1000)
        return {
            "total": SESSION_START_TOTAL,
            "remaining": max(0, SESSION_START_TOTAL - self.identify_count),
            "reset_after": max(0, SESSION_START_WINDOW_MS - elapsed_ms),
            "max_concurrency": self.max_concurrency,
        }

    def live_sessions(self, shard_id: int | None = None) -> list[GatewaySession]:
        return [
            s
            for s in self.sessions.values()
            if not s.invalidated and (shard_id is None or s.shard_id == shard_id)
        ]

    def ready_session(
        self, guild_id: int | None = None, *, any_shard: bool = False
    ) -> GatewaySession | None:
        """The newest connected session receiving this guild's events (``None``: DMs, shard 0);
        ``any_shard``: the newest connected session of any shard."""
        connected = [
            s for s in self.live_sessions() if s.connected and (any_shard or s.owns(guild_id))
        ]
        return connected[-1] if connected else None

    def shard_connected(self, shard_id: int) -> bool:
        return any(s.connected for s in self.live_sessions(shard_id))

    async def dispatch(self, event: str, data: EventData, *, guild_id: int | None) -> None:
        """Send an event about ``guild_id`` (``None``: a DM) to the live sessions of that
        guild's shard (buffered for sessions that may resume)."""
        for session in self.live_sessions():
            if session.owns(guild_id):
                await self._dispatch_to(session, event, data)

    async def dispatch_interaction(self, payload: JSON) -> None:
        guild_id = int(payload["guild_id"]) if payload.get("guild_id") else None
        session = self.ready_session(guild_id)
        if session is None:
            shard = shard_of(guild_id, self.shard_count)
            raise RuntimeError(f"no bot session of shard {shard} is connected to the fake gateway")
        await self._dispatch_to(session, "INTERACTION_CREATE", payload)

    def _connections_of(self, shard_id: int | None) -> list[GatewayConnection]:
        return [
            c
            for c in self.connections
            if shard_id is None or (c.session is not None and c.session.shard_id == shard_id)
        ]

    async def drop(
        self, *, code: int = 4000, resumable: bool = True, shard_id: int | None = None
    ) -> None:
        for connection in self._connections_of(shard_id):
            connection.dropped = True
            if connection.session is not None and not resumable:
                connection.session.invalidated = True
            await self._close(connection, code, "dropped by test")
        await self.state.notify()

    async def request_reconnect(self, *, shard_id: int | None = None) -> None:
        """Send opcode 7 RECONNECT; the client should close and RESUME."""
        for connection in self._connections_of(shard_id):
            connection.dropped = True
            await self._send(connection.ws, {"op": OP_RECONNECT, "d": None})

    async def close(self) -> None:
        for connection in list(self.connections):
            await connection.ws.close(code=1001, message=b"fake discord shutting down")

    # ------------------------------------------------------------------ websocket handler
    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(max_msg_size=0)
        await ws.prepare(request)
        connection = GatewayConnection(ws=ws, path=request.path, query=dict(request.query))
        self.connections.append(connection)
        await self._send(
            ws, {"op": OP_HELLO, "d": {"heartbeat_interval": self.heartbeat_interval_ms}}
        )
        try:
            async for message in ws:
                if message.type is not WSMsgType.TEXT:
                    continue
                frame = json.loads(message.data)
                await self._on_frame(connection, frame)
        finally:
            self.connections.remove(connection)
            session = connection.session
            if session is not None and session.ws is ws:
                session.ws = None
                # A client closing with 1000/1001 ends its session, like on Discord.
                if not connection.dropped and ws.close_code in (1000, 1001):
                    session.invalidated = True
            await self.state.notify()
        return ws

    async def _on_frame(self, connection: GatewayConnection, frame: JSON) -> None:
        op = frame.get("op")
        data: Any = frame.get("d")
        if op == OP_HEARTBEAT:
            self.heartbeat_count += 1
            await self._send(connection.ws, {"op": OP_HEARTBEAT_ACK})
        elif op == OP_IDENTIFY:
            await self._identify(connection, data)
        elif op == OP_RESUME:
            await self._resume(connection, data)
        elif op == OP_REQUEST_GUILD_MEMBERS:
            await self._request_members(connection, data)
        elif op == OP_PRESENCE_UPDATE:
            self.presence = data

    def _shard_error(self, shard: Any) -> tuple[int, str] | None:
        """The close Discord answers a bad ``shard`` pair with, or None if it is fine."""
        if (
            not isinstance(shard, list | tuple)
            or len(shard) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in shard)
        ):
            return CLOSE_INVALID_SHARD, "Invalid shard."
        shard_id, num_shards = shard
        if num_shards < 1 or not 0 <= shard_id < num_shards:
            return CLOSE_INVALID_SHARD, "Invalid shard."
        if self.shard_count > 1 and num_shards < self.shard_count:
            return CLOSE_SHARDING_REQUIRED, "Sharding required."
        if self.shard_count > 1 and num_shards != self.shard_count:
            return CLOSE_INVALID_SHARD, "Invalid shard."
        return None

    def _identify_too_soon(self, shard_id: int) -> bool:
        """Record this IDENTIFY in its bucket unless the bucket identified within the interval.
        Strict, like Discord, which times arrivals by its own clock: one arriving even a
        millisecond early is refused, however the client measured its wait."""
        bucket = shard_id % max(1, self.max_concurrency)
        now = self.identify_clock()
        last = self._bucket_identified_at.get(bucket)
        if self.identify_rate_limit and last is not None and now - last < self.identify_interval:
            return True
        self._bucket_identified_at[bucket] = now
        return False

    async def _identify(self, connection: GatewayConnection, data: JSON) -> None:
        if data.get("token") != self.state.token:
            await self._close(connection, 4004, "Authentication failed.")
            return
        if connection.session is not None:
            await self._close(connection, 4005, "Already authenticated.")
            return
        intents = int(data.get("intents", 0))
        if intents & PRIVILEGED_INTENTS & ~self.allowed_privileged_intents:
            await self._close(connection, 4014, "Disallowed intent(s).")
            return
        shard = data.get("shard", [0, 1])
        refusal = self._shard_error(shard)
        if refusal is not None:
            pair = None
            if isinstance(shard, list | tuple) and len(shard) == 2:
                pair = (shard[0], shard[1])
            await self._close(connection, *refusal, shard=pair)
            return
        shard_id, num_shards = int(shard[0]), int(shard[1])
        if any(s.connected and s.shard == (shard_id, num_shards) for s in self.live_sessions()):
            # Counted on arrival, refused or not: Discord would let both sessions live (both
            # getting the shard's events), so a bot must not even try.
            self.overlapping_shard_sessions += 1
        if self._identify_too_soon(shard_id):
            # Discord's answer to an IDENTIFY over the session start rate limit.
            self.identify_rate_violations += 1
            await self._send(connection.ws, {"op": OP_INVALID_SESSION, "d": False})
            await self.state.notify()
            return
        self.identify_count += 1
        self.identify_counts[shard_id] = self.identify_counts.get(shard_id, 0) + 1
        self.last_identify = data
        session = GatewaySession(
            session_id=secrets.token_hex(16),
            intents=intents,
            shard_id=shard_id,
            num_shards=num_shards,
            ws=connection.ws,
        )
        connection.session = session
        state = self.state
        guilds = [
            g for g in state.guilds.values() if session.owns(g.id) and state.bot.id in g.members
        ]
        ready = {
            "v": 10,
            "user": {**state.bot.to_payload(), "verified": True, "mfa_enabled": False, "flags": 0},
            "guilds": [{"id": str(g.id), "unavailable": True} for g in guilds],
            "session_id": session.session_id,
            "session_type": "normal",
            "resume_gateway_url": f"{self.ws_base()}/gateway-resume/",
            "private_channels": [],
            "relationships": [],
            "presences": [],
            "application": {
                "id": str(state.application_id),
                "flags": application_flags(self.allowed_privileged_intents),
            },
            "shard": [shard_id, num_shards],
        }
        await self._dispatch_to(session, "READY", ready)
        for guild in guilds:
            await self._dispatch_to(
                session, "GUILD_CREATE", state.guild_create_payload(guild, intents)
            )
        # Registered only now, so nothing is dispatched to it before READY and GUILD_CREATE.
        self.sessions[session.session_id] = session
        session.ready = True
        await state.notify()

    async def _resume(self, connection: GatewayConnection, data: JSON) -> None:
        session = self.sessions.get(str(data.get("session_id")))
        if data.get("token") != self.state.token:
            await connection.ws.close(code=4004, message=b"Authentication failed.")
            return
        if session is None or session.invalidated:
            await self._send(connection.ws, {"op": OP_INVALID_SESSION, "d": False})
            return
        since = int(data.get("seq") or 0)
        async with session.lock:
            connection.session = session
            session.ws = connection.ws
            for seq, frame in session.backlog:
                if seq > since:
                    await connection.ws.send_str(frame)
        await self._dispatch_to(session, "RESUMED", {})
        session.ready = True
        self.resume_count += 1
        await self.state.notify()

    async def _request_members(self, connection: GatewayConnection, data: JSON) -> None:
        session = connection.session
        if session is None:
            return
        guild = self.state.guilds.get(int(data["guild_id"]))
        if guild is None or not session.owns(guild.id):
            # Discord answers only for guilds of the requesting shard.
            return
        user_ids = {int(u) for u in data.get("user_ids") or []}
        query = str(data.get("query") or "").lower()
        members = []
        if session.intents & INTENT_GUILD_MEMBERS or user_ids:
            for uid in guild.members:
                if user_ids and uid not in user_ids:
                    continue
                if query and not self.state.users[uid].username.lower().startswith(query):
                    continue
                members.append(self.state.member_payload(guild.id, uid))
        chunk: JSON = {
            "guild_id": str(guild.id),
            "members": members,
            "chunk_index": 0,
            "chunk_count": 1,
            "not_found": [],
        }
        if data.get("nonce"):
            chunk["nonce"] = data["nonce"]
        await self._dispatch_to(session, "GUILD_MEMBERS_CHUNK", chunk)

    # ------------------------------------------------------------------ sending
    def ws_base(self) -> str:
        return self.state.base_url.replace("http://", "ws://", 1)

    async def _dispatch_to(self, session: GatewaySession, event: str, data: EventData) -> None:
        payload = data(session.intents) if callable(data) else data
        if payload is None:
            return
        async with session.lock:
            session.seq += 1
            session.dispatched.append((event, payload))
            frame = dumps({"op": OP_DISPATCH, "t": event, "s": session.seq, "d": payload})
            session.backlog.append((session.seq, frame))
            if session.ws is not None and not session.ws.closed:
                # If the socket is going away the client will RESUME and replay the backlog.
                with contextlib.suppress(ConnectionError, RuntimeError):
                    await session.ws.send_str(frame)

    async def _close(
        self,
        connection: GatewayConnection,
        code: int,
        reason: str,
        *,
        shard: tuple[int, int] | None = None,
    ) -> None:
        if shard is None and connection.session is not None:
            shard = connection.session.shard
        self.closes.append(GatewayClose(code=code, reason=reason, shard=shard))
        await connection.ws.close(code=code, message=reason.encode())

    @staticmethod
    async def _send(ws: web.WebSocketResponse, frame: JSON) -> None:
        with contextlib.suppress(ConnectionError, RuntimeError):
            await ws.send_str(dumps(frame))
