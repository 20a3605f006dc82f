"""Plain data records the fake Discord stores and hands to tests."""

# The test-facing API deliberately takes ``timeout=`` arguments (``await it.response(timeout=5)``).
# ruff: noqa: ASYNC109

from __future__ import annotations

import builtins
import datetime as dt
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar

from ._util import FLAG_EPHEMERAL, FLAG_LOADING, JSON, iso, utcnow

if TYPE_CHECKING:
    from .state import DiscordState

T = TypeVar("T")


@dataclass(frozen=True)
class Upload:
    """A file a test uploads (slash command ATTACHMENT option, user message attachment)."""

    filename: str
    data: bytes
    content_type: str | None = None
    description: str | None = None


@dataclass
class Attachment:
    """A stored attachment; its bytes are served by the fake at ``url`` and ``proxy_url``."""

    id: int
    filename: str
    data: builtins.bytes
    content_type: str | None
    url: str
    proxy_url: str
    width: int | None = None
    height: int | None = None
    description: str | None = None
    ephemeral: bool = False

    @property
    def size(self) -> int:
        return len(self.data)

    def to_payload(self) -> JSON:
        payload: JSON = {
            "id": str(self.id),
            "filename": self.filename,
            "size": self.size,
            "url": self.url,
            "proxy_url": self.proxy_url,
        }
        if self.content_type is not None:
            payload["content_type"] = self.content_type
        if self.width is not None:
            payload["width"] = self.width
            payload["height"] = self.height
        if self.description is not None:
            payload["description"] = self.description
        if self.ephemeral:
            payload["ephemeral"] = True
        return payload

    @property
    def bytes(self) -> builtins.bytes:
        """Alias of :attr:`data`."""
        return self.data


@dataclass
class User:
    id: int
    username: str
    global_name: str | None = None
    bot: bool = False
    #: False: the bot's DMs to this user fail with 403 50007 (privacy settings, blocked bot).
    accepts_dms: bool = True

    def to_payload(self) -> JSON:
        payload: JSON = {
            "id": str(self.id),
            "username": self.username,
            "discriminator": "0",
            "global_name": self.global_name,
            "avatar": None,
            "public_flags": 0,
        }
        if self.bot:
            payload["bot"] = True
        return payload


@dataclass
class Role:
    id: int
    guild_id: int
    name: str
    permissions: int = 0
    position: int = 0
    managed: bool = False
    bot_id: int | None = None
    color: int = 0

    def to_payload(self) -> JSON:
        payload: JSON = {
            "id": str(self.id),
            "name": self.name,
            "color": self.color,
            "colors": {
                "primary_color": self.color,
                "secondary_color": None,
                "tertiary_color": None,
            },
            "hoist": False,
            "icon": None,
            "unicode_emoji": None,
            "position": self.position,
            "permissions": str(self.permissions),
            "managed": self.managed,
            "mentionable": False,
            "flags": 0,
        }
        if self.bot_id is not None:
            payload["tags"] = {"bot_id": str(self.bot_id)}
        return payload


@dataclass
class Overwrite:
    """A channel permission overwrite: ``type`` 0 for a role (the @everyone role's id is the
    guild's), 1 for a member; ``allow``/``deny`` are permission bit sets."""

    id: int
    type: int
    allow: int = 0
    deny: int = 0

    def to_payload(self) -> JSON:
        return {
            "id": str(self.id),
            "type": self.type,
            "allow": str(self.allow),
            "deny": str(self.deny),
        }


@dataclass
class Channel:
    """A guild text channel, category or thread, or a DM between the bot and one user."""

    id: int
    #: ``None`` for DM channels.
    guild_id: int | None
    name: str
    type: int = 0
    position: int = 0
    parent_id: int | None = None
    topic: str | None = None
    nsfw: bool = False
    owner_id: int | None = None
    last_message_id: int | None = None
    message_count: int = 0
    rate_limit_per_user: int = 0
    default_auto_archive_duration: int = 1440
    #: Threads only (``thread_metadata``).
    auto_archive_duration: int = 1440
    archived: bool = False
    locked: bool = False
    invitable: bool = True
    archive_timestamp: dt.datetime | None = None
    #: DMs only: the user the bot talks to.
    recipient_id: int | None = None
    #: Text channels only (threads use their parent's), in the order they were first set.
    overwrites: list[Overwrite] = field(default_factory=list)
    created_at: dt.datetime = field(default_factory=utcnow)

    @property
    def is_thread(self) -> bool:
        return self.type in (10, 11, 12)

    @property
    def is_dm(self) -> bool:
        return self.type == 1

    def to_payload(self) -> JSON:
        """The channel object (for DMs without ``recipients``: see ``DiscordState``)."""
        last_message_id = None if self.last_message_id is None else str(self.last_message_id)
        if self.is_dm:
            return {"id": str(self.id), "type": 1, "last_message_id": last_message_id, "flags": 0}
        payload: JSON = {
            "id": str(self.id),
            "type": self.type,
            "guild_id": str(self.guild_id),
            "name": self.name,
            "parent_id": None if self.parent_id is None else str(self.parent_id),
            "last_message_id": last_message_id,
            "rate_limit_per_user": self.rate_limit_per_user,
            "flags": 0,
        }
        if self.is_thread:
            metadata: JSON = {
                "archived": self.archived,
                "auto_archive_duration": self.auto_archive_duration,
                "archive_timestamp": iso(self.archive_timestamp or self.created_at),
                "locked": self.locked,
                "create_timestamp": iso(self.created_at),
            }
            if self.type == 12:
                metadata["invitable"] = self.invitable
            payload.update(
                owner_id=str(self.owner_id),
                message_count=self.message_count,
                member_count=1,
                total_message_sent=self.message_count,
                thread_metadata=metadata,
            )
        else:
            payload.update(
                position=self.position,
                permission_overwrites=[o.to_payload() for o in self.overwrites],
                nsfw=self.nsfw,
                topic=self.topic,
                default_auto_archive_duration=self.default_auto_archive_duration,
            )
        return payload


@dataclass
class Member:
    user_id: int
    guild_id: int
    roles: list[int] = field(default_factory=list)
    nick: str | None = None
    #: Overrides the permissions computed from roles (what interactions report).
    permissions: int | None = None
    joined_at: dt.datetime = field(default_factory=utcnow)


@dataclass
class Guild:
    id: int
    name: str
    owner_id: int
    roles: dict[int, Role] = field(default_factory=dict)
    channel_ids: list[int] = field(default_factory=list)
    members: dict[int, Member] = field(default_factory=dict)
    bot_role_id: int | None = None
    created_at: dt.datetime = field(default_factory=utcnow)
    system_channel_id: int | None = None


@dataclass
class Message:
    """A message as the fake Discord stores it (bot, user, interaction response or followup)."""

    id: int
    channel_id: int
    guild_id: int | None
    author_id: int
    type: int = 0
    content: str = ""
    embeds: list[JSON] = field(default_factory=list)
    components: list[JSON] = field(default_factory=list)
    attachments: list[Attachment] = field(default_factory=list)
    flags: int = 0
    tts: bool = False
    nonce: str | None = None
    message_reference: JSON | None = None
    allowed_mentions: JSON | None = None
    #: User ids this message pings (after applying ``allowed_mentions``).
    mentions: list[int] = field(default_factory=list)
    mention_roles: list[int] = field(default_factory=list)
    sticker_ids: list[str] = field(default_factory=list)
    poll: JSON | None = None
    webhook_id: int | None = None
    application_id: int | None = None
    #: Id of the interaction that created this message (responses and followups).
    interaction_id: int | None = None
    interaction_metadata: JSON | None = None
    interaction: JSON | None = None
    #: For ephemeral messages: the only user who can see it.
    visible_to: int | None = None
    thread_id: int | None = None
    reactions: dict[str, set[int]] = field(default_factory=dict)
    created_at: dt.datetime = field(default_factory=utcnow)
    edited_at: dt.datetime | None = None
    #: Number of edits (REST PATCH, interaction update, deferred placeholder being filled).
    edits: int = 0
    deleted: bool = False
    #: Snapshots (as dicts) of previous versions, oldest first.
    history: list[JSON] = field(default_factory=list)

    @property
    def ephemeral(self) -> bool:
        return bool(self.flags & FLAG_EPHEMERAL)

    @property
    def loading(self) -> bool:
        """True while this is a deferred ("Bot is thinking...") placeholder."""
        return bool(self.flags & FLAG_LOADING)

    @property
    def reply_to(self) -> int | None:
        """The id of the message this one replies to, if any."""
        if self.message_reference and self.message_reference.get("message_id"):
            return int(self.message_reference["message_id"])
        return None

    def attachment(self, filename: str) -> Attachment:
        for attachment in self.attachments:
            if attachment.filename == filename:
                return attachment
        raise KeyError(f"message {self.id} has no attachment {filename!r}")

    def iter_components(self) -> Iterator[JSON]:
        """Every component in the message, depth first (rows, buttons, selects, v2 layouts)."""
        yield from iter_components(self.components)

    @property
    def custom_ids(self) -> list[str]:
        return [c["custom_id"] for c in self.iter_components() if "custom_id" in c]

    def component(self, custom_id: str) -> JSON:
        for component in self.iter_components():
            if component.get("custom_id") == custom_id:
                return component
        raise KeyError(f"message {self.id} has no component with custom_id {custom_id!r}")

    def snapshot(self) -> JSON:
        return {
            "content": self.content,
            "embeds": self.embeds,
            "components": self.components,
            "attachments": [a.filename for a in self.attachments],
            "flags": self.flags,
        }


def iter_components(components: list[JSON]) -> Iterator[JSON]:
    for component in components:
        yield component
        yield from iter_components(component.get("components", []))
        for key in ("accessory", "component"):
            child = component.get(key)
            if isinstance(child, dict):
                yield from iter_components([child])


@dataclass
class LoggedRequest:
    """One REST call the bot made. ``json`` is the JSON body or the multipart ``payload_json``."""

    method: str
    path: str
    json: Any
    query: dict[str, str]
    files: list[Upload]
    status: int = 0

    def __iter__(self) -> Iterator[Any]:
        # Allows ``method, path, body = request`` unpacking.
        return iter((self.method, self.path, self.json))


class Callback(NamedTuple):
    """An interaction callback the bot sent: ``type`` (4, 5, 6, 7, 8, 9) and its ``data``."""

    type: int
    data: JSON | None


class InteractionHandle:
    """What ``invoke_slash``/``click``/... return: follow an interaction's responses."""

    def __init__(
        self,
        state: DiscordState,
        *,
        id: int,
        token: str,
        type: int,
        user_id: int,
        channel_id: int,
        guild_id: int | None,
        payload: JSON,
        source_message_id: int | None = None,
    ) -> None:
        self._state = state
        self.id = id
        self.token = token
        self.type = type
        self.user_id = user_id
        self.channel_id = channel_id
        self.guild_id = guild_id
        #: The INTERACTION_CREATE payload that was dispatched.
        self.payload = payload
        #: For component / modal-from-component interactions: the message interacted with.
        self.source_message_id = source_message_id
        self.created_monotonic = 0.0
        #: When the bot's first callback for it arrived (even one refused as too late).
        self.first_answer_monotonic: float | None = None
        self.callbacks: list[Callback] = []
        self.original_id: int | None = None
        self.followup_ids: list[int] = []
        #: The modal the bot opened (callback type 9), if any.
        self.modal: JSON | None = None
        #: Autocomplete choices the bot returned (callback type 8), if any.
        self.choices: list[JSON] | None = None

    def __repr__(self) -> str:
        return f"<InteractionHandle id={self.id} type={self.type} callbacks={self.callbacks!r}>"

    @property
    def acknowledged(self) -> bool:
        return bool(self.callbacks)

    @property
    def data(self) -> JSON:
        data: JSON = self.payload.get("data", {})
        return data

    @property
    def original(self) -> Message | None:
        """The original response message (for component 6/7 responses: the clicked message)."""
        return None if self.original_id is None else self._state.messages[self.original_id]

    @property
    def followups(self) -> list[Message]:
        return [self._state.messages[mid] for mid in self.followup_ids]

    async def wait_for(self, predicate: Callable[[], T | None], timeout: float = 5.0) -> T:
        return await self._state.wait_for(predicate, timeout=timeout)

    async def response(self, timeout: float = 5.0) -> Callback:
        """The first callback the bot sent for this interaction."""
        await self.wait_for(lambda: self.callbacks, timeout=timeout)
        return self.callbacks[0]

    async def wait_original(
        self, predicate: Callable[[Message], Any] | None = None, timeout: float = 5.0
    ) -> Message:
        """Wait for the original response: past its "thinking" state, or until ``predicate``."""

        def check() -> Message | None:
            original = self.original
            if original is None:
                return None
            if predicate is None:
                return None if original.loading else original
            return original if predicate(original) else None

        return await self.wait_for(check, timeout=timeout)

    async def wait_followup(
        self, predicate: Callable[[Message], Any] | None = None, timeout: float = 5.0
    ) -> Message:
        """Wait for a followup message (matching ``predicate``) and return it."""

        def check() -> Message | None:
            for message in self.followups:
                if predicate is None or predicate(message):
                    return message
            return None

        return await self.wait_for(check, timeout=timeout)
