"""REST API v10 routes of the fake Discord (plus the attachment CDN).

Every call is logged in ``state.requests``; calls to routes the fake does not implement are
answered with Discord's 404 JSON shape and also logged in ``state.unhandled_requests``.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import BodyPartReader, web

from ._util import (
    ALREADY_ACKNOWLEDGED,
    CANNOT_DM_USER,
    CANNOT_EDIT_OTHERS,
    CHANNEL_PRIVATE_THREAD,
    CHANNEL_PUBLIC_THREAD,
    CHANNEL_TEXT,
    FLAG_EPHEMERAL,
    FLAG_LOADING,
    INTENT_GUILDS,
    INTERACTION_APPLICATION_COMMAND,
    INTERACTION_AUTOCOMPLETE,
    INTERACTION_COMPONENT,
    INTERACTION_MODAL_SUBMIT,
    INVALID_WEBHOOK_TOKEN,
    JSON,
    MISSING_ACCESS,
    MSG_CHAT_INPUT_COMMAND,
    MSG_CONTEXT_MENU_COMMAND,
    MSG_DEFAULT,
    MSG_REPLY,
    SENDABLE_FLAGS,
    UNKNOWN_COMMAND,
    UNKNOWN_GUILD,
    UNKNOWN_INTERACTION,
    UNKNOWN_MESSAGE,
    UNKNOWN_WEBHOOK,
    DiscordHTTPError,
    FakeNotImplemented,
    application_flags,
    empty_response,
    form_error,
    json_response,
    not_found,
)
from .commands import store_commands, stored_command, validate_command
from .messages import MessageWriter
from .models import Callback, Channel, InteractionHandle, LoggedRequest, Message, Upload
from .ratelimits import RateLimiter
from .state import DiscordState

Handler = Callable[["RestRequest"], Awaitable[web.Response]]
_log = logging.getLogger(__name__)
FILE_FIELD = re.compile(r"files\[(\d+)\]")
NONCE_WINDOW_S = 300.0
#: Callback types Discord accepts per interaction type (6/7 also need a source message).
CALLBACK_TYPES = {
    INTERACTION_APPLICATION_COMMAND: {4, 5, 9},
    INTERACTION_COMPONENT: {4, 5, 6, 7, 9},
    INTERACTION_AUTOCOMPLETE: {8},
    INTERACTION_MODAL_SUBMIT: {4, 5, 6, 7},
}


@dataclass
class RestRequest:
    raw: web.Request
    params: dict[str, str]
    query: dict[str, str]
    json: Any
    files: dict[int, Upload]

    def int_param(self, name: str) -> int:
        try:
            return int(self.params[name])
        except ValueError:
            raise DiscordHTTPError(404, 0, f"404: Not Found ({name})") from None

    @property
    def body(self) -> JSON:
        return self.json if isinstance(self.json, dict) else {}


@dataclass
class Route:
    method: str
    pattern: re.Pattern[str]
    template: str
    handler: Handler
    auth: bool


class RestApi:
    def __init__(self, state: DiscordState) -> None:
        self.state = state
        self.writer = MessageWriter(state)
        self.limiter = RateLimiter()
        self.routes: list[Route] = []
        add = self._add
        add("GET", "/users/@me", self.get_me)
        add("GET", "/users/{user_id}", self.get_user)
        add("POST", "/users/@me/channels", self.create_dm)
        add("GET", "/users/@me/guilds", self.list_my_guilds)
        add("DELETE", "/users/@me/guilds/{guild_id}", self.leave_guild)
        add("GET", "/oauth2/applications/@me", self.get_application)
        add("GET", "/gateway", self.get_gateway, auth=False)
        add("GET", "/gateway/bot", self.get_bot_gateway)
        add("GET", "/guilds/{guild_id}", self.get_guild)
        add("GET", "/guilds/{guild_id}/channels", self.get_guild_channels)
        add("GET", "/guilds/{guild_id}/roles", self.get_guild_roles)
        add("GET", "/guilds/{guild_id}/members/{user_id}", self.get_guild_member)
        add("GET", "/channels/{channel_id}", self.get_channel)
        add("PATCH", "/channels/{channel_id}", self.edit_channel)
        add("GET", "/channels/{channel_id}/messages", self.list_messages)
        add("POST", "/channels/{channel_id}/messages", self.create_message)
        add("GET", "/channels/{channel_id}/messages/{message_id}", self.get_message)
        add("PATCH", "/channels/{channel_id}/messages/{message_id}", self.edit_message)
        add("DELETE", "/channels/{channel_id}/messages/{message_id}", self.delete_message)
        add("POST", "/channels/{channel_id}/typing", self.typing)
        add("POST", "/channels/{channel_id}/threads", self.create_thread)
        add("POST", "/channels/{channel_id}/messages/{message_id}/threads", self.create_thread)
        add("PUT", "/channels/{channel_id}/thread-members/@me", self.join_thread)
        reaction = "/channels/{channel_id}/messages/{message_id}/reactions/{emoji}/@me"
        add("PUT", reaction, self.add_reaction)
        add("DELETE", reaction, self.remove_reaction)
        for scope in ("", "/guilds/{guild_id}"):
            base = "/applications/{application_id}" + scope + "/commands"
            add("GET", base, self.list_commands)
            add("PUT", base, self.bulk_overwrite_commands)
            add("POST", base, self.upsert_command)
            add("GET", base + "/{command_id}", self.get_command)
            add("PATCH", base + "/{command_id}", self.edit_command)
            add("DELETE", base + "/{command_id}", self.delete_command)
        add("POST", "/interactions/{interaction_id}/{token}/callback", self.callback, auth=False)
        hook = "/webhooks/{application_id}/{token}"
        add("POST", hook, self.create_followup, auth=False)
        add("GET", hook + "/messages/{message}", self.get_webhook_message, auth=False)
        add("PATCH", hook + "/messages/{message}", self.edit_webhook_message, auth=False)
        add("DELETE", hook + "/messages/{message}", self.delete_webhook_message, auth=False)

    def _add(self, method: str, template: str, handler: Handler, *, auth: bool = True) -> None:
        # ``*_id`` parameters are snowflakes; anything else (tokens, emoji, @original) is free.
        regex = re.sub(r"\{(\w+_id)\}", r"(?P<\1>\\d+)", template)
        regex = re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", regex)
        self.routes.append(Route(method, re.compile(f"^{regex}$"), template, handler, auth))

    # ------------------------------------------------------------------ dispatch
    async def handle_api(self, request: web.Request, path: str) -> web.Response:
        entry = LoggedRequest(request.method, path, None, dict(request.query), [])
        self.state.requests.append(entry)
        try:
            body, files = await self._read_body(request)
            entry.json, entry.files = body, [files[i] for i in sorted(files)]
            response = await self._route(request, path, body, files, entry)
        except Exception as error:
            # A fake bug or a malformed body: answer 400 (discord.py retries 5xx with sleeps)
            # and count it as unhandled so tests asserting on unhandled_requests notice it.
            _log.exception("fake Discord failed on %s %s", request.method, path)
            self.state.unhandled_requests.append(entry)
            message = f"fake Discord could not handle this request: {error!r}"
            response = json_response({"message": message, "code": 0}, 400)
        entry.status = response.status
        await self.state.notify()
        return response

    async def _route(
        self,
        request: web.Request,
        path: str,
        body: Any,
        files: dict[int, Upload],
        entry: LoggedRequest,
    ) -> web.Response:
        for route in self.routes:
            match = route.pattern.match(path)
            if match is None or route.method != request.method:
                continue
            if route.auth and request.headers.get("Authorization") != f"Bot {self.state.token}":
                return json_response({"message": "401: Unauthorized", "code": 0}, 401)
            params = match.groupdict()
            verdict = self.limiter.check(
                request.method,
                path,
                route.template,
                params,
                authenticated=route.auth,
                shared_channel=self._shared_channel(request.method, route.template, params),
            )
            if verdict.hit is not None:  # refused before the handler runs: no side effects
                return json_response(verdict.hit.body(), 429, headers=verdict.headers)
            rest_request = RestRequest(request, params, dict(request.query), body, files)
            try:
                response = await route.handler(rest_request)
            except DiscordHTTPError as error:
                if isinstance(error, FakeNotImplemented):
                    self.state.unhandled_requests.append(entry)
                response = json_response(error.body(), error.status)
            # Discord sends the bucket's headers on every answer of a limited route, errors too.
            response.headers.update(verdict.headers)
            return response
        self.state.unhandled_requests.append(entry)
        return json_response({"message": "404: Not Found", "code": 0}, 404)

    def _shared_channel(self, method: str, template: str, params: dict[str, str]) -> int | None:
        """The channel whose shared webhook limit this request counts against: the
        interaction's (an unknown token counts nowhere; its handler answers 404)."""
        if not self.limiter.counts_shared(method, template):
            return None
        it = self.state.interactions_by_token.get(params.get("token", ""))
        return it.channel_id if it is not None else None

    @staticmethod
    async def _read_body(request: web.Request) -> tuple[Any, dict[int, Upload]]:
        files: dict[int, Upload] = {}
        if request.content_type.startswith("multipart/"):
            body: Any = None
            reader = await request.multipart()
            async for part in reader:
                if not isinstance(part, BodyPartReader):
                    continue
                name = part.name or ""
                file_match = FILE_FIELD.fullmatch(name)
                if name == "payload_json":
                    body = json.loads(await part.text())
                elif file_match:
                    data = bytes(await part.read(decode=False))
                    # Discord derives content types from the file itself, not the part header.
                    files[int(file_match.group(1))] = Upload(part.filename or "unknown", data)
            return body, files
        if not request.can_read_body:
            return None, files
        raw = await request.read()
        return (json.loads(raw) if raw else None), files

    async def handle_cdn(self, request: web.Request) -> web.Response:
        path = request.path
        self.state.cdn_requests.append(path)
        match = re.search(r"attachments/(?:\d+)/(\d+)/([^/]+)$", path)
        attachment = self.state.attachments.get(int(match.group(1))) if match else None
        if match is None or attachment is None or attachment.filename != match.group(2):
            entry = LoggedRequest(request.method, path, None, dict(request.query), [], 404)
            self.state.unhandled_requests.append(entry)
            await self.state.notify()
            return web.Response(status=404, text="Not Found")
        return web.Response(
            body=attachment.data, content_type=attachment.content_type or "application/octet-stream"
        )

    async def handle_unknown(self, request: web.Request) -> web.Response:
        entry = LoggedRequest(request.method, request.path, None, dict(request.query), [], 404)
        self.state.unhandled_requests.append(entry)
        await self.state.notify()
        return json_response({"message": "404: Not Found", "code": 0}, 404)

    # ------------------------------------------------------------------ users / app / gateway
    async def get_me(self, req: RestRequest) -> web.Response:
        me = self.state.bot.to_payload()
        me.update(verified=True, mfa_enabled=False, flags=0, email=None, locale="en-US")
        return json_response(me)

    async def get_user(self, req: RestRequest) -> web.Response:
        return json_response(self.state.user_payload(req.int_param("user_id")))

    async def list_my_guilds(self, req: RestRequest) -> web.Response:
        """The guilds the bot is in, by id, paged like Discord's (after/before, limit 200)."""
        limit = min(int(req.query.get("limit", 200)), 200)
        after, before = int(req.query.get("after", 0)), req.query.get("before")
        guilds = sorted(
            (g for g in self.state.guilds.values() if self.state.bot.id in g.members),
            key=lambda g: g.id,
        )
        guilds = [g for g in guilds if g.id > after and (before is None or g.id < int(before))]
        return json_response(
            [
                {
                    "id": str(g.id),
                    "name": g.name,
                    "icon": None,
                    "banner": None,
                    "owner": False,
                    "permissions": str(self.state.permissions(g.id, self.state.bot.id)),
                    "features": [],
                }
                for g in guilds[:limit]
            ]
        )

    async def leave_guild(self, req: RestRequest) -> web.Response:
        """The bot leaves: it is no longer a member, and its shard gets GUILD_DELETE."""
        state = self.state
        guild = state.get_guild(req.int_param("guild_id"))
        if guild.members.pop(state.bot.id, None) is None:
            raise not_found(UNKNOWN_GUILD, "Guild")
        payload = {"id": str(guild.id)}
        await state.gateway.dispatch(
            "GUILD_DELETE", lambda i: payload if i & INTENT_GUILDS else None, guild_id=guild.id
        )
        return web.Response(status=204)

    async def get_application(self, req: RestRequest) -> web.Response:
        state = self.state
        owner = next(iter(state.guilds.values())).owner_id if state.guilds else state.bot.id
        team: JSON | None = None
        if state.team is not None:
            team_owner, members = state.team
            team = {
                "id": str(state.application_id + 1),
                "name": "Team",
                "icon": None,
                "owner_user_id": str(team_owner),
                "members": [
                    {
                        "membership_state": 2,  # accepted
                        "team_id": str(state.application_id + 1),
                        "user": state.user_payload(member),
                        "role": role,
                        "permissions": ["*"],
                    }
                    for member, role in [(team_owner, "admin"), *members]
                ],
            }
        return json_response(
            {
                "team": team,
                "id": str(state.application_id),
                "name": state.bot.username,
                "icon": None,
                "description": "",
                "summary": "",
                "type": None,
                "bot_public": True,
                "bot_require_code_grant": False,
                "verify_key": "0" * 64,
                "owner": state.user_payload(owner),
                "flags": application_flags(state.gateway.allowed_privileged_intents),
                "bot": state.bot.to_payload(),
                "redirect_uris": [],
                "interactions_endpoint_url": None,
                "approximate_guild_count": len(state.guilds),
                "integration_types_config": {"0": {}},
            }
        )

    async def get_gateway(self, req: RestRequest) -> web.Response:
        return json_response({"url": self.state.gateway.ws_base() + "/gateway/"})

    async def get_bot_gateway(self, req: RestRequest) -> web.Response:
        gateway = self.state.gateway
        return json_response(
            {
                "url": gateway.ws_base() + "/gateway/",
                "shards": gateway.shard_count,
                "session_start_limit": gateway.session_start_limit(),
            }
        )

    # ------------------------------------------------------------------ guilds / channels
    async def get_guild(self, req: RestRequest) -> web.Response:
        guild = self.state.get_guild(req.int_param("guild_id"))
        if self.state.bot.id not in guild.members:  # the bot left it
            raise DiscordHTTPError(403, MISSING_ACCESS, "Missing Access")
        payload = self.state.guild_create_payload(guild, 0)
        for key in ("channels", "threads", "members", "voice_states", "presences", "joined_at"):
            payload.pop(key, None)
        payload.update(approximate_member_count=len(guild.members), approximate_presence_count=0)
        return json_response(payload)

    async def get_guild_channels(self, req: RestRequest) -> web.Response:
        guild = self.state.get_guild(req.int_param("guild_id"))
        return json_response([self.state.channel_payload(c) for c in guild.channel_ids])

    async def get_guild_roles(self, req: RestRequest) -> web.Response:
        guild = self.state.get_guild(req.int_param("guild_id"))
        return json_response([r.to_payload() for r in guild.roles.values()])

    async def get_guild_member(self, req: RestRequest) -> web.Response:
        guild_id, user_id = req.int_param("guild_id"), req.int_param("user_id")
        return json_response(self.state.member_payload(guild_id, user_id))

    async def get_channel(self, req: RestRequest) -> web.Response:
        return json_response(self.state.channel_payload(req.int_param("channel_id")))

    async def edit_channel(self, req: RestRequest) -> web.Response:
        state = self.state
        channel = state.get_channel(req.int_param("channel_id"))
        state.edit_channel(channel, req.body, actor_id=state.bot.id)
        await state.channel_updated(channel)
        return json_response(state.channel_payload(channel.id))

    async def create_dm(self, req: RestRequest) -> web.Response:
        try:
            recipient_id = int(req.body["recipient_id"])
        except (KeyError, TypeError, ValueError):
            raise form_error("recipient_id", "This field is required") from None
        channel = self.state.open_dm(self.state.get_user(recipient_id).id)
        return json_response(self.state.channel_payload(channel.id))

    async def typing(self, req: RestRequest) -> web.Response:
        channel = self.state.get_channel(req.int_param("channel_id"))
        self.state.typing.append((channel.id, self.state.bot.id))
        return empty_response()

    # ------------------------------------------------------------------ channel messages
    async def list_messages(self, req: RestRequest) -> web.Response:
        channel = self.state.get_channel(req.int_param("channel_id"))
        limit = max(1, min(100, int(req.query.get("limit", 50))))
        messages = self.state.visible_messages(channel.id)  # oldest first
        if "before" in req.query:
            messages = [m for m in messages if m.id < int(req.query["before"])]
        if "after" in req.query:
            after = int(req.query["after"])
            messages = [m for m in messages if m.id > after][:limit]
        if "around" in req.query:
            around = int(req.query["around"])
            older = [m for m in messages if m.id <= around][-(limit // 2 + limit % 2) :]
            newer = [m for m in messages if m.id > around][: limit // 2]
            messages = older + newer
        newest_first = list(reversed(messages))[:limit]
        return json_response([self.state.message_payload(m) for m in newest_first])

    async def get_message(self, req: RestRequest) -> web.Response:
        message = self.state.get_channel_message(
            req.int_param("channel_id"), req.int_param("message_id")
        )
        return json_response(self.state.message_payload(message))

    async def create_message(self, req: RestRequest) -> web.Response:
        state = self.state
        channel = state.get_channel(req.int_param("channel_id"))
        payload = req.body
        nonce = None if payload.get("nonce") is None else str(payload["nonce"])
        nonce_key = (channel.id, state.bot.id, nonce or "")
        if nonce and payload.get("enforce_nonce"):
            previous = state.nonces.get(nonce_key)
            if previous is not None and time.monotonic() - previous[1] < NONCE_WINDOW_S:
                # Discord returns the message created earlier with this nonce.
                return json_response(state.message_payload(state.messages[previous[0]]))
        if channel.recipient_id is not None:
            recipient = state.get_user(channel.recipient_id)
            if recipient.bot or not recipient.accepts_dms:
                raise DiscordHTTPError(403, CANNOT_DM_USER, "Cannot send messages to this user")
        state.check_can_post(channel, state.bot.id, with_files=bool(req.files))
        unarchive = state.check_thread_post(channel, state.bot.id)
        message = Message(
            id=state.snowflake(),
            channel_id=channel.id,
            guild_id=channel.guild_id,
            author_id=state.bot.id,
            nonce=nonce,
        )
        reference = payload.get("message_reference")
        if reference:
            message.message_reference = self._reference(channel, reference)
            if message.message_reference is not None:
                message.type = MSG_REPLY
        self.writer.apply(message, payload, req.files, editing=False, allowed_flags=SENDABLE_FLAGS)
        if unarchive:
            await state.unarchive_thread(channel)
        await state.add_message(message)
        if nonce:
            state.nonces[nonce_key] = (message.id, time.monotonic())
        return json_response(state.message_payload(message))

    def _reference(self, channel: Channel, reference: JSON) -> JSON | None:
        if int(reference.get("type", 0)) != 0:
            raise form_error(
                "message_reference.type", "Only reply references are supported by the fake"
            )
        target_id = int(reference.get("message_id", 0))
        target = self.state.messages.get(target_id)
        channel_id = int(reference.get("channel_id") or channel.id)
        if target is None or target.deleted or target.channel_id != channel_id:
            if reference.get("fail_if_not_exists", True):
                raise form_error(
                    "message_reference", "Unknown message", "MESSAGE_REFERENCE_UNKNOWN_MESSAGE"
                )
            return None
        return message_reference(target)

    async def edit_message(self, req: RestRequest) -> web.Response:
        message = self.state.get_channel_message(
            req.int_param("channel_id"), req.int_param("message_id")
        )
        self.state.check_thread_active(
            self.state.get_channel(message.channel_id), self.state.bot.id
        )
        payload = req.body
        if message.author_id != self.state.bot.id and (set(payload) - {"flags"} or req.files):
            raise DiscordHTTPError(
                403, CANNOT_EDIT_OTHERS, "Cannot edit a message authored by another user"
            )
        await self.edit(message, payload, req.files)
        return json_response(self.state.message_payload(message))

    async def edit(self, message: Message, payload: JSON, files: dict[int, Upload]) -> None:
        previous, was_loading = self._apply_edit(message, payload, files)
        await self.state.message_edited(message, previous, was_loading=was_loading)

    def _apply_edit(
        self, message: Message, payload: JSON, files: dict[int, Upload]
    ) -> tuple[JSON, bool]:
        """Validate and apply an edit (no awaits); editing a deferred message ends "thinking"."""
        previous, was_loading = message.snapshot(), message.loading
        self.writer.apply(message, payload, files, editing=True, allowed_flags=SENDABLE_FLAGS)
        message.flags &= ~FLAG_LOADING
        return previous, was_loading

    async def delete_message(self, req: RestRequest) -> web.Response:
        message = self.state.get_channel_message(
            req.int_param("channel_id"), req.int_param("message_id")
        )
        await self.state.delete_message(message)
        return empty_response()

    async def add_reaction(self, req: RestRequest) -> web.Response:
        message = self.state.get_channel_message(
            req.int_param("channel_id"), req.int_param("message_id")
        )
        self.state.check_thread_active(
            self.state.get_channel(message.channel_id), self.state.bot.id
        )
        message.reactions.setdefault(req.params["emoji"], set()).add(self.state.bot.id)
        return empty_response()

    async def remove_reaction(self, req: RestRequest) -> web.Response:
        message = self.state.get_channel_message(
            req.int_param("channel_id"), req.int_param("message_id")
        )
        self.state.check_thread_active(
            self.state.get_channel(message.channel_id), self.state.bot.id
        )
        message.reactions.get(req.params["emoji"], set()).discard(self.state.bot.id)
        return empty_response()

    # ------------------------------------------------------------------ threads
    async def create_thread(self, req: RestRequest) -> web.Response:
        state = self.state
        parent = state.get_channel(req.int_param("channel_id"))
        if parent.type != CHANNEL_TEXT:
            raise form_error("", "Threads can only be created in text channels")
        payload = req.body
        name = str(payload.get("name") or "")
        if not 1 <= len(name) <= 100:
            raise form_error("name", "Must be between 1 and 100 in length.")
        starter: Message | None = None
        if "message_id" in req.params:
            starter = state.get_channel_message(parent.id, req.int_param("message_id"))
            if starter.thread_id is not None:
                raise DiscordHTTPError(
                    400, 160004, "A thread has already been created for this message"
                )
            thread_type = CHANNEL_PUBLIC_THREAD
            thread_id = starter.id  # Discord reuses the starter message's id
        else:
            thread_type = int(payload.get("type") or CHANNEL_PRIVATE_THREAD)
            if thread_type not in (CHANNEL_PUBLIC_THREAD, CHANNEL_PRIVATE_THREAD):
                raise form_error("type", "Invalid thread type")
            thread_id = state.snowflake()
        thread = Channel(
            id=thread_id,
            guild_id=parent.guild_id,
            name=name,
            type=thread_type,
            parent_id=parent.id,
            owner_id=state.bot.id,
            auto_archive_duration=int(payload.get("auto_archive_duration") or 1440),
        )
        state.channels[thread.id] = thread
        state.channel_messages[thread.id] = []
        if starter is not None:
            starter.thread_id = thread.id
        await state.add_thread(thread)
        return json_response(thread.to_payload(), 201)

    async def join_thread(self, req: RestRequest) -> web.Response:
        thread = self.state.get_channel(req.int_param("channel_id"))
        if not thread.is_thread:
            raise form_error("", "Not a thread")
        return empty_response()

    # ------------------------------------------------------------------ application commands
    def _scope(self, req: RestRequest) -> int | None:
        if req.int_param("application_id") != self.state.application_id:
            raise DiscordHTTPError(403, 50001, "Missing Access")
        if "guild_id" not in req.params:
            return None
        return self.state.get_guild(req.int_param("guild_id")).id

    def _find_command(self, req: RestRequest) -> tuple[int | None, JSON]:
        scope = self._scope(req)
        command_id = req.params["command_id"]
        for command in self.state.commands_for(scope):
            if command["id"] == command_id:
                return scope, command
        raise not_found(UNKNOWN_COMMAND, "application command")

    async def list_commands(self, req: RestRequest) -> web.Response:
        return json_response(self.state.commands_for(self._scope(req)))

    async def bulk_overwrite_commands(self, req: RestRequest) -> web.Response:
        scope = self._scope(req)
        stored = store_commands(self.state, scope, req.json, replace=True)
        return json_response(stored)

    async def upsert_command(self, req: RestRequest) -> web.Response:
        scope = self._scope(req)
        existed = any(c["name"] == req.body.get("name") for c in self.state.commands_for(scope))
        (stored,) = store_commands(self.state, scope, [req.body], replace=False)
        return json_response(stored, 200 if existed else 201)

    async def get_command(self, req: RestRequest) -> web.Response:
        return json_response(self._find_command(req)[1])

    async def edit_command(self, req: RestRequest) -> web.Response:
        scope, command = self._find_command(req)
        merged = {**command, **req.body}
        validate_command(merged, "")
        stored = stored_command(self.state, scope, merged)
        commands = self.state.commands_for(scope)
        commands[commands.index(command)] = stored
        return json_response(stored)

    async def delete_command(self, req: RestRequest) -> web.Response:
        scope, command = self._find_command(req)
        self.state.commands_for(scope).remove(command)
        return empty_response()

    # ------------------------------------------------------------------ interaction callbacks
    async def callback(self, req: RestRequest) -> web.Response:
        state = self.state
        it = state.interactions.get(req.int_param("interaction_id"))
        if it is None or it.token != req.params["token"]:
            raise not_found(UNKNOWN_INTERACTION, "interaction")
        if it.first_answer_monotonic is None:  # when the bot answered, even too late
            it.first_answer_monotonic = time.monotonic()
        deadline = state.interaction_deadline
        if deadline is not None and time.monotonic() - it.created_monotonic > deadline:
            raise not_found(UNKNOWN_INTERACTION, "interaction")  # what a late response gets
        if it.acknowledged:
            raise DiscordHTTPError(
                400, ALREADY_ACKNOWLEDGED, "Interaction has already been acknowledged."
            )
        type_ = int(req.body.get("type", 0))
        data: JSON = req.body.get("data") or {}
        if type_ not in CALLBACK_TYPES[it.type] or (
            type_ in (6, 7) and it.source_message_id is None
        ):
            raise form_error(
                "type", f"Callback type {type_} is invalid for interaction type {it.type}"
            )
        message = await self._perform_callback(it, type_, data, req.files)
        await state.notify()
        if req.query.get("with_response") not in ("1", "true", "True"):
            return empty_response()
        interaction: JSON = {"id": str(it.id), "type": it.type}
        body: JSON = {"interaction": interaction}
        if message is not None and type_ in (4, 5, 7):
            interaction.update(
                response_message_id=str(message.id),
                response_message_loading=message.loading,
                response_message_ephemeral=message.ephemeral,
            )
            body["resource"] = {"type": type_, "message": state.message_payload(message)}
        return json_response(body)

    async def _perform_callback(
        self, it: InteractionHandle, type_: int, data: JSON, files: dict[int, Upload]
    ) -> Message | None:
        """Validate and apply one callback; returns the message it created or updated."""
        state = self.state
        message: Message | None = None
        previous: JSON | None = None
        if type_ == 4:
            message = self._interaction_message(it, followup=False)
            self.writer.apply(
                message, data, files, editing=False, allowed_flags=SENDABLE_FLAGS | FLAG_EPHEMERAL
            )
        elif type_ == 5:
            message = self._interaction_message(it, followup=False)
            message.flags = FLAG_LOADING | (int(data.get("flags") or 0) & FLAG_EPHEMERAL)
        elif type_ in (6, 7):
            message = state.messages[it.source_message_id or 0]
            if type_ == 7:
                previous = message.snapshot()
                self.writer.apply(message, data, files, editing=True, allowed_flags=SENDABLE_FLAGS)
        elif type_ == 8:
            choices = data.get("choices") or []
            if len(choices) > 25:
                raise form_error("data.choices", "Must be 25 or fewer in length.")
            for index, choice in enumerate(choices):
                self._validate_choice(index, choice)
            it.choices = list(choices)
        elif type_ == 9:
            self._validate_modal(data)
            it.modal = data
            state.open_modals[(it.user_id, str(data["custom_id"]))] = it
        # Record the acknowledgement before anything is awaited (no double-ack race).
        it.callbacks.append(Callback(type_, data or None))
        if message is None:
            return None
        it.original_id = message.id
        if type_ in (4, 5):
            if message.ephemeral:
                message.visible_to = it.user_id
            await state.add_message(message)
        elif previous is not None:
            await state.message_edited(message, previous, was_loading=False)
        return message

    @staticmethod
    def _validate_choice(index: int, choice: Any) -> None:
        """An autocomplete suggestion: a name of 1–100 characters and a value (a string of
        at most 100, or a number), as Discord checks them."""
        where = f"data.choices.{index}"
        name = choice.get("name") if isinstance(choice, dict) else None
        if not isinstance(name, str) or not 1 <= len(name) <= 100:
            raise form_error(f"{where}.name", "Must be between 1 and 100 in length.")
        value = choice.get("value")
        if isinstance(value, str):
            if len(value) > 100:
                raise form_error(f"{where}.value", "Must be 100 or fewer in length.")
        elif isinstance(value, bool) or not isinstance(value, int | float):
            raise form_error(f"{where}.value", "Value is required.")

    @staticmethod
    def _validate_modal(data: JSON) -> None:
        custom_id = data.get("custom_id")
        if not isinstance(custom_id, str) or not 1 <= len(custom_id) <= 100:
            raise form_error("data.custom_id", "Must be between 1 and 100 in length.")
        if not 1 <= len(str(data.get("title") or "")) <= 45:
            raise form_error("data.title", "Must be between 1 and 45 in length.")
        if not 1 <= len(data.get("components") or []) <= 5:
            raise form_error("data.components", "Modals hold 1-5 components")

    def _interaction_message(self, it: InteractionHandle, *, followup: bool) -> Message:
        state = self.state
        data = it.data
        if it.type == INTERACTION_APPLICATION_COMMAND and not followup:
            type_ = MSG_CHAT_INPUT_COMMAND if data.get("type", 1) == 1 else MSG_CONTEXT_MENU_COMMAND
        else:
            type_ = MSG_DEFAULT
        metadata: JSON = {
            "id": str(it.id),
            "type": it.type,
            "user": state.user_payload(it.user_id),
            # Guild installs: the guild's id, or "0" in the bot's DMs.
            "authorizing_integration_owners": {"0": str(it.guild_id or 0)},
        }
        legacy: JSON | None = None
        if it.type == INTERACTION_APPLICATION_COMMAND:
            name = command_path_name(data)
            metadata.update(name=name, command_type=data.get("type", 1))
            if data.get("target_id") and data.get("type") == 3:
                metadata["target_message_id"] = str(data["target_id"])
            legacy = {"id": str(it.id), "type": it.type, "name": name, "user": metadata["user"]}
        if it.source_message_id is not None:
            metadata["interacted_message_id"] = str(it.source_message_id)
        if followup and it.original_id is not None:
            metadata["original_response_message_id"] = str(it.original_id)
        return Message(
            id=state.snowflake(),
            channel_id=it.channel_id,
            guild_id=it.guild_id,
            author_id=state.bot.id,
            type=type_,
            webhook_id=state.application_id,
            application_id=state.application_id,
            interaction_id=it.id,
            interaction_metadata=metadata,
            interaction=legacy,
        )

    # ------------------------------------------------------------------ interaction webhooks
    def _webhook_interaction(self, req: RestRequest) -> InteractionHandle:
        it = self.state.interactions_by_token.get(req.params["token"])
        if it is None or req.params["application_id"] != str(self.state.application_id):
            raise not_found(UNKNOWN_WEBHOOK, "Webhook")
        if time.monotonic() - it.created_monotonic > self.state.interaction_token_lifetime:
            # Discord's answer once the token's 15 minutes are over, on every webhook route.
            raise DiscordHTTPError(401, INVALID_WEBHOOK_TOKEN, "Invalid Webhook Token")
        if not it.acknowledged:
            raise not_found(UNKNOWN_WEBHOOK, "Webhook")
        return it

    def _webhook_message(self, req: RestRequest) -> tuple[InteractionHandle, Message]:
        it = self._webhook_interaction(req)
        raw_id = req.params["message"]
        if raw_id == "@original":
            message_id = it.original_id
        else:
            message_id = int(raw_id) if raw_id.isdigit() else None
            if message_id != it.original_id and message_id not in it.followup_ids:
                message_id = None
        message = self.state.messages.get(message_id or 0)
        if message is None or message.deleted:
            raise not_found(UNKNOWN_MESSAGE, "Message")
        return it, message

    async def create_followup(self, req: RestRequest) -> web.Response:
        state = self.state
        it = self._webhook_interaction(req)
        channel = state.get_channel(it.channel_id)
        if state.check_thread_post(channel, state.bot.id):
            await state.unarchive_thread(channel)
        original = it.original
        if (
            original is not None
            and original.loading
            and not original.deleted
            and it.callbacks[0].type == 5
        ):
            # Discord: the first followup after a deferral replaces the "thinking" message,
            # keeping the deferral's visibility (once that message is deleted, a followup is a
            # new message with its own flags).
            previous, _ = self._apply_edit(original, {**req.body, "flags": None}, req.files)
            it.followup_ids.append(original.id)
            await state.message_edited(original, previous, was_loading=True)
            message = original
        else:
            message = self._interaction_message(it, followup=True)
            self.writer.apply(
                message,
                req.body,
                req.files,
                editing=False,
                allowed_flags=SENDABLE_FLAGS | FLAG_EPHEMERAL,
            )
            if message.ephemeral:
                message.visible_to = it.user_id
            it.followup_ids.append(message.id)
            await state.add_message(message)
        if req.query.get("wait") in ("1", "true", "True"):
            return json_response(state.message_payload(message))
        return empty_response()

    async def get_webhook_message(self, req: RestRequest) -> web.Response:
        return json_response(self.state.message_payload(self._webhook_message(req)[1]))

    async def edit_webhook_message(self, req: RestRequest) -> web.Response:
        _, message = self._webhook_message(req)
        self.state.check_thread_active(
            self.state.get_channel(message.channel_id), self.state.bot.id
        )
        await self.edit(message, req.body, req.files)
        return json_response(self.state.message_payload(message))

    async def delete_webhook_message(self, req: RestRequest) -> web.Response:
        _, message = self._webhook_message(req)
        await self.state.delete_message(message)
        return empty_response()


def message_reference(target: Message) -> JSON:
    """A reply reference to ``target`` (no ``guild_id`` in DMs)."""
    reference: JSON = {
        "type": 0,
        "message_id": str(target.id),
        "channel_id": str(target.channel_id),
    }
    if target.guild_id is not None:
        reference["guild_id"] = str(target.guild_id)
    return reference


def command_path_name(data: JSON) -> str:
    """The invoked command's full name, e.g. ``flux pro`` for a sub-command."""
    parts = [str(data.get("name", ""))]
    options = data.get("options") or []
    while options and options[0].get("type") in (1, 2):
        parts.append(str(options[0]["name"]))
        options = options[0].get("options") or []
    return " ".join(parts)
