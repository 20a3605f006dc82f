"""The fake gateway: HELLO, IDENTIFY/READY/GUILD_CREATE, heartbeats, RESUME and dispatch.

Frames are sent as plain JSON text; discord.py accepts those even though it asks for
``compress=zlib-stream`` (it only inflates binary frames).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web

from ._util import INTENT_GUILD_MEMBERS, JSON, PRIVILEGED_INTENTS, dumps
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

#: An event payload, or a function of the receiving session's intents (None = not delivered).
EventData = JSON | Callable[[int], JSON | None]


@dataclass
class GatewaySession:
    session_id: str
    intents: int
    seq: int = 0
    #: Every dispatched frame, kept so a RESUME can replay what the client missed.
    backlog: list[tuple[int, str]] = field(default_factory=list)
    ws: web.WebSocketResponse | None = None
    ready: bool = False
    invalidated: bool = False
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def connected(self) -> bool:
        return self.ws is not None and not self.ws.closed and self.ready


@dataclass
class GatewayConnection:
    ws: web.WebSocketResponse
    path: str
    query: dict[str, str]
    session: GatewaySession | None = None
    dropped: bool = False


class GatewayServer:
    def __init__(self, state: DiscordState, *, heartbeat_interval_ms: int = 41250) -> None:
        self.state = state
        self.heartbeat_interval_ms = heartbeat_interval_ms
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
    def live_sessions(self) -> list[GatewaySession]:
        return [s for s in self.sessions.values() if not s.invalidated]

    def ready_session(self) -> GatewaySession | None:
        connected = [s for s in self.live_sessions() if s.connected]
        return connected[-1] if connected else None

    async def dispatch(self, event: str, data: EventData) -> None:
        """Send an event to every live session (buffered for sessions that may resume)."""
        for session in self.live_sessions():
            await self._dispatch_to(session, event, data)

    async def dispatch_interaction(self, payload: JSON) -> None:
        session = self.ready_session()
        if session is None:
            raise RuntimeError("no bot is connected to the fake gateway")
        await self._dispatch_to(session, "INTERACTION_CREATE", payload)

    async def drop(self, *, code: int = 4000, resumable: bool = True) -> None:
        for connection in list(self.connections):
            connection.dropped = True
            if connection.session is not None and not resumable:
                connection.session.invalidated = True
            await connection.ws.close(code=code, message=b"dropped by test")
        await self.state.notify()

    async def request_reconnect(self) -> None:
        """Send opcode 7 RECONNECT; the client should close and RESUME."""
        for connection in list(self.connections):
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

    async def _identify(self, connection: GatewayConnection, data: JSON) -> None:
        if data.get("token") != self.state.token:
            await connection.ws.close(code=4004, message=b"Authentication failed.")
            return
        if connection.session is not None:
            await connection.ws.close(code=4005, message=b"Already authenticated.")
            return
        intents = int(data.get("intents", 0))
        if intents & PRIVILEGED_INTENTS & ~self.allowed_privileged_intents:
            await connection.ws.close(code=4014, message=b"Disallowed intent(s).")
            return
        self.identify_count += 1
        self.last_identify = data
        session = GatewaySession(
            session_id=secrets.token_hex(16), intents=intents, ws=connection.ws
        )
        connection.session = session
        state = self.state
        ready = {
            "v": 10,
            "user": {**state.bot.to_payload(), "verified": True, "mfa_enabled": False, "flags": 0},
            "guilds": [{"id": str(g), "unavailable": True} for g in state.guilds],
            "session_id": session.session_id,
            "session_type": "normal",
            "resume_gateway_url": f"{self.ws_base()}/gateway-resume/",
            "private_channels": [],
            "relationships": [],
            "presences": [],
            "application": {"id": str(state.application_id), "flags": 1 << 19 | 1 << 15},
            "shard": [0, 1],
        }
        await self._dispatch_to(session, "READY", ready)
        for guild in list(state.guilds.values()):
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
        if guild is None:
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
            frame = dumps({"op": OP_DISPATCH, "t": event, "s": session.seq, "d": payload})
            session.backlog.append((session.seq, frame))
            if session.ws is not None and not session.ws.closed:
                # If the socket is going away the client will RESUME and replay the backlog.
                with contextlib.suppress(ConnectionError, RuntimeError):
                    await session.ws.send_str(frame)

    @staticmethod
    async def _send(ws: web.WebSocketResponse, frame: JSON) -> None:
        with contextlib.suppress(ConnectionError, RuntimeError):
            await ws.send_str(dumps(frame))
