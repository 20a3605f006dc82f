"""The fake Discord's world: users, guilds, channels, messages, commands, interactions.

Also builds the JSON payloads Discord would send for those objects and owns the
``asyncio.Condition`` that every state change notifies (``wait_for`` is built on it).
"""

# The test-facing API deliberately takes ``timeout=`` arguments (``await it.response(timeout=5)``).
# ruff: noqa: ASYNC109

from __future__ import annotations

import asyncio
import re
import time
import urllib.parse
from collections.abc import Callable, Coroutine, Iterable
from typing import TYPE_CHECKING, Any, TypeVar

from ._util import (
    ADMINISTRATOR,
    ALL_CHANNEL_PERMISSIONS,
    ATTACH_FILES,
    CHANNEL_DM,
    CHANNEL_PRIVATE_THREAD,
    CHANNEL_TEXT,
    DEFAULT_ATTACHMENT_SIZE_LIMIT,
    DEFAULT_EVERYONE_PERMISSIONS,
    DM_PERMISSIONS,
    INTENT_DIRECT_MESSAGES,
    INTENT_GUILD_MEMBERS,
    INTENT_GUILD_MESSAGES,
    INTENT_GUILDS,
    INTENT_MESSAGE_CONTENT,
    INTERACTION_TOKEN_LIFETIME_S,
    JSON,
    MANAGE_THREADS,
    MISSING_ACCESS,
    MISSING_PERMISSIONS,
    OVERWRITE_MEMBER,
    OVERWRITE_ROLE,
    SEND_MESSAGES,
    SEND_MESSAGES_IN_THREADS,
    THREAD_ARCHIVED,
    THREAD_LOCKED,
    UNKNOWN_CHANNEL,
    UNKNOWN_GUILD,
    UNKNOWN_MEMBER,
    UNKNOWN_MESSAGE,
    UNKNOWN_USER,
    VIEW_CHANNEL,
    WRONG_CHANNEL_TYPE,
    DiscordHTTPError,
    FakeNotImplemented,
    SnowflakeFactory,
    apply_implicit_permissions,
    apply_overwrites,
    compute_permissions,
    form_error,
    guess_content_type,
    image_size,
    iso,
    not_found,
    utcnow,
)
from .models import (
    Attachment,
    Channel,
    Guild,
    InteractionHandle,
    LoggedRequest,
    Member,
    Message,
    Overwrite,
    Role,
    Upload,
    User,
)

if TYPE_CHECKING:
    from .gateway import GatewayServer

T = TypeVar("T")

USER_MENTION = re.compile(r"<@!?(\d+)>")
ROLE_MENTION = re.compile(r"<@&(\d+)>")
ARCHIVE_DURATIONS = (60, 1440, 4320, 10080)
#: Fields ``PATCH /channels/{id}`` accepts, per kind of channel.
THREAD_EDIT_FIELDS = {
    "name",
    "archived",
    "locked",
    "invitable",
    "auto_archive_duration",
    "rate_limit_per_user",
}
TEXT_CHANNEL_EDIT_FIELDS = {
    "name",
    "topic",
    "nsfw",
    "rate_limit_per_user",
    "default_auto_archive_duration",
}


class DiscordState:
    def __init__(
        self,
        *,
        token: str,
        bot_name: str,
        bot_permissions: int,
        interaction_deadline: float | None,
        attachment_size_limit: int = DEFAULT_ATTACHMENT_SIZE_LIMIT,
        interaction_token_lifetime: float = INTERACTION_TOKEN_LIFETIME_S,
    ) -> None:
        self.snowflake = SnowflakeFactory()
        self.token = token
        # Modern applications share their id with their bot user.
        self.application_id = self.snowflake()
        self.bot = User(id=self.application_id, username=bot_name, global_name=bot_name, bot=True)
        self.bot_permissions = bot_permissions
        self.interaction_deadline = interaction_deadline
        #: Seconds after its creation an interaction's token stops working (401 50027).
        self.interaction_token_lifetime = interaction_token_lifetime
        # Seconds the gateway takes to deliver an interaction (Discord under load); its
        # 3 s still count from its creation.
        self.interaction_delivery_delay = 0.0
        self.attachment_size_limit = attachment_size_limit
        self.base_url = "http://127.0.0.1:0"

        self.users: dict[int, User] = {self.bot.id: self.bot}
        self.guilds: dict[int, Guild] = {}
        self.channels: dict[int, Channel] = {}
        self.messages: dict[int, Message] = {}
        self.channel_messages: dict[int, list[int]] = {}
        #: user id -> id of the bot's DM channel with that user.
        self.dm_channels: dict[int, int] = {}
        self.attachments: dict[int, Attachment] = {}
        #: The application's team: (owner id, [(member id, role)]), or None for one owner.
        self.team: tuple[int, list[tuple[int, str]]] | None = None
        self.global_commands: list[JSON] = []
        self.guild_commands: dict[int, list[JSON]] = {}
        self.command_ids: dict[tuple[int | None, int, str], int] = {}
        self.interactions: dict[int, InteractionHandle] = {}
        self.interactions_by_token: dict[str, InteractionHandle] = {}
        #: (user id, modal custom_id) -> the interaction whose callback opened that modal.
        self.open_modals: dict[tuple[int, str], InteractionHandle] = {}
        #: (channel id, author id, nonce) -> (message id, monotonic time)
        self.nonces: dict[tuple[int, int, str], tuple[int, float]] = {}
        self.requests: list[LoggedRequest] = []
        self.unhandled_requests: list[LoggedRequest] = []
        self.cdn_requests: list[str] = []
        self.typing: list[tuple[int, int]] = []
        self.version = 0

        self._cond = asyncio.Condition()
        self._tasks: set[asyncio.Task[Any]] = set()
        self.gateway: GatewayServer  # assigned by FakeDiscord

    # ------------------------------------------------------------------ change notification
    async def notify(self) -> None:
        self.version += 1
        async with self._cond:
            self._cond.notify_all()

    def changed(self) -> None:
        """Notify waiters from synchronous code (schedules :meth:`notify`)."""
        self.version += 1
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return
        self.spawn(self.notify())

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def drain(self) -> None:
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def wait_for(self, predicate: Callable[[], T | None], timeout: float = 5.0) -> T:
        """Wait until ``predicate()`` is truthy (re-checked on every state change); return it."""
        result: T | None = None

        def check() -> bool:
            nonlocal result
            result = predicate()
            return bool(result)

        try:
            async with self._cond:
                await asyncio.wait_for(self._cond.wait_for(check), timeout)
        except TimeoutError:
            recent = "\n  ".join(f"{r.status} {r.method} {r.path}" for r in self.requests[-8:])
            raise TimeoutError(
                f"condition not met within {timeout}s; last REST calls:\n  {recent or '(none)'}"
                f"\nunhandled: {[(r.method, r.path) for r in self.unhandled_requests]}"
            ) from None
        assert result is not None
        return result

    # ------------------------------------------------------------------ lookups
    def get_guild(self, guild_id: int) -> Guild:
        try:
            return self.guilds[guild_id]
        except KeyError:
            raise not_found(UNKNOWN_GUILD, "Guild") from None

    def get_channel(self, channel_id: int) -> Channel:
        try:
            return self.channels[channel_id]
        except KeyError:
            raise not_found(UNKNOWN_CHANNEL, "Channel") from None

    def get_user(self, user_id: int) -> User:
        try:
            return self.users[user_id]
        except KeyError:
            raise not_found(UNKNOWN_USER, "User") from None

    def get_member(self, guild_id: int, user_id: int) -> Member:
        try:
            return self.get_guild(guild_id).members[user_id]
        except KeyError:
            raise not_found(UNKNOWN_MEMBER, "Member") from None

    def get_channel_message(self, channel_id: int, message_id: int) -> Message:
        """A message as the channel REST endpoints see it (no deleted or ephemeral ones)."""
        message = self.messages.get(message_id)
        if (
            message is None
            or message.channel_id != channel_id
            or message.deleted
            or message.ephemeral
        ):
            raise not_found(UNKNOWN_MESSAGE, "Message")
        return message

    def visible_messages(self, channel_id: int) -> list[Message]:
        return [
            self.messages[mid]
            for mid in self.channel_messages.get(channel_id, [])
            if not self.messages[mid].deleted and not self.messages[mid].ephemeral
        ]

    # ------------------------------------------------------------------ permissions
    def permissions(self, guild_id: int, user_id: int) -> int:
        """Guild-level permissions: @everyone | the member's roles (owner, ADMINISTRATOR: all)."""
        guild = self.get_guild(guild_id)
        member = guild.members.get(user_id)
        if member is not None and member.permissions is not None:
            return member.permissions
        everyone = guild.roles[guild.id].permissions
        roles = [
            guild.roles[r].permissions for r in (member.roles if member else []) if r in guild.roles
        ]
        return compute_permissions(everyone, roles, is_owner=guild.owner_id == user_id)

    def channel_permissions(self, channel: Channel, user_id: int) -> int:
        """A user's permissions in a channel, as Discord computes them (DMs: a fixed set).

        https://discord.com/developers/docs/topics/permissions#permission-overwrites: the
        guild-level value, then the channel's overwrites (a thread uses its parent's), then
        the implicit rules discord.py's ``permissions_for`` applies too. An ``add_member``
        ``permissions`` override is the answer everywhere."""
        if channel.guild_id is None:
            return DM_PERMISSIONS
        guild = self.get_guild(channel.guild_id)
        member = guild.members.get(user_id)
        if member is not None and member.permissions is not None:
            return member.permissions
        value = self.permissions(guild.id, user_id)
        # Owners and administrators (ALL_PERMISSIONS) bypass every overwrite.
        if not value & ADMINISTRATOR:
            source = channel
            if channel.is_thread and channel.parent_id is not None:
                source = self.get_channel(channel.parent_id)
            value = apply_overwrites(
                value,
                [(o.id, o.type, o.allow, o.deny) for o in source.overwrites],
                everyone_id=guild.id,
                role_ids=set(member.roles) if member is not None else set(),
                user_id=user_id,
            )
        return apply_implicit_permissions(value, in_thread=channel.is_thread)

    def set_overwrite(self, channel: Channel, target_id: int, allow: int, deny: int) -> None:
        """Create, replace or (``allow == deny == 0``) remove an overwrite, like
        ``PUT``/``DELETE /channels/{id}/permissions/{target}``. Raises ``ValueError``."""
        if channel.guild_id is None or channel.is_thread:
            raise ValueError("overwrites exist only on guild channels (threads use their parent's)")
        guild = self.get_guild(channel.guild_id)
        if target_id in guild.roles:
            kind = OVERWRITE_ROLE
        elif target_id in guild.members:
            kind = OVERWRITE_MEMBER
        else:
            raise ValueError(f"{target_id} is neither a role nor a member of guild {guild.id}")
        for name, bits in (("allow", allow), ("deny", deny)):
            if bits < 0 or bits & ~ALL_CHANNEL_PERMISSIONS:
                raise ValueError(
                    f"{name}={bits}: overwrites hold only channel permissions "
                    f"(not in discord.Permissions.all_channel(): {bits & ~ALL_CHANNEL_PERMISSIONS})"
                )
        if allow & deny:
            raise ValueError(f"bits {allow & deny} are both allowed and denied")
        existing = next((o for o in channel.overwrites if o.id == target_id), None)
        if not allow and not deny:
            channel.overwrites = [o for o in channel.overwrites if o is not existing]
        elif existing is not None:
            existing.allow, existing.deny = allow, deny
        else:
            channel.overwrites.append(Overwrite(id=target_id, type=kind, allow=allow, deny=deny))

    def check_can_post(self, channel: Channel, user_id: int, *, with_files: bool) -> None:
        """Posting needs VIEW_CHANNEL (else 403 50001), SEND_MESSAGES or in threads
        SEND_MESSAGES_IN_THREADS, and ATTACH_FILES for files (else 403 50013). DMs: no rule."""
        if channel.guild_id is None:
            return
        have = self.channel_permissions(channel, user_id)
        if not have & VIEW_CHANNEL:
            raise DiscordHTTPError(403, MISSING_ACCESS, "Missing Access")
        send = SEND_MESSAGES_IN_THREADS if channel.is_thread else SEND_MESSAGES
        if not have & send or (with_files and not have & ATTACH_FILES):
            raise DiscordHTTPError(403, MISSING_PERMISSIONS, "Missing Permissions")

    def can_manage_threads(self, channel: Channel, user_id: int) -> bool:
        return bool(self.channel_permissions(channel, user_id) & MANAGE_THREADS)

    # ------------------------------------------------------------------ threads
    def check_thread_post(self, channel: Channel, user_id: int) -> bool:
        """Whether ``user_id`` may post in ``channel`` (raises like Discord if not).

        Returns True when the post un-archives the thread: posting to an archived thread
        un-archives it unless it is locked; a locked thread takes posts only from members with
        MANAGE_THREADS, and a locked *archived* thread from nobody.
        """
        if not channel.is_thread:
            return False
        if channel.locked and not self.can_manage_threads(channel, user_id):
            raise DiscordHTTPError(403, THREAD_LOCKED, "Thread is locked")
        if channel.archived:
            if channel.locked:
                raise DiscordHTTPError(400, THREAD_ARCHIVED, "Thread is archived")
            return True
        return False

    def check_thread_active(self, channel: Channel, user_id: int) -> None:
        """Edits and reactions: refused in archived threads, and in locked ones for non-mods."""
        if not channel.is_thread:
            return
        if channel.archived:
            raise DiscordHTTPError(400, THREAD_ARCHIVED, "Thread is archived")
        if channel.locked and not self.can_manage_threads(channel, user_id):
            raise DiscordHTTPError(403, THREAD_LOCKED, "Thread is locked")

    async def unarchive_thread(self, thread: Channel) -> None:
        thread.archived = False
        thread.archive_timestamp = utcnow()
        await self.channel_updated(thread)

    def edit_channel(self, channel: Channel, changes: JSON, *, actor_id: int | None) -> None:
        """Validate and apply a ``PATCH /channels/{id}`` body like Discord.

        ``actor_id`` is whoever edits (the bot, for REST calls); ``None`` is a moderator acting
        in the Discord client, for whom the permission rules are skipped.
        """
        if channel.is_dm:
            raise DiscordHTTPError(400, WRONG_CHANNEL_TYPE, "Cannot execute action on a DM channel")
        allowed = THREAD_EDIT_FIELDS if channel.is_thread else TEXT_CHANNEL_EDIT_FIELDS
        unsupported = sorted(set(changes) - allowed)
        if unsupported:
            kind = "thread" if channel.is_thread else "text channel"
            raise FakeNotImplemented(f"editing {unsupported} of a {kind}")
        self._validate_channel_edit(changes)
        if "invitable" in changes and channel.type != CHANNEL_PRIVATE_THREAD:
            raise form_error("invitable", "Only private threads can be invitable")
        if channel.is_thread and actor_id is not None:
            self._check_thread_edit(channel, changes, actor_id)
        for key in ("name", "topic", "nsfw", "rate_limit_per_user", "locked", "invitable"):
            if key in changes:
                setattr(channel, key, changes[key])
        if "default_auto_archive_duration" in changes:
            channel.default_auto_archive_duration = int(changes["default_auto_archive_duration"])
        if "auto_archive_duration" in changes:
            channel.auto_archive_duration = int(changes["auto_archive_duration"])
            channel.archive_timestamp = utcnow()
        if "archived" in changes and bool(changes["archived"]) != channel.archived:
            channel.archived = bool(changes["archived"])
            channel.archive_timestamp = utcnow()

    @staticmethod
    def _validate_channel_edit(changes: JSON) -> None:
        name = changes.get("name", "x")
        if not isinstance(name, str) or not 1 <= len(name) <= 100:
            raise form_error("name", "Must be between 1 and 100 in length.")
        topic = changes.get("topic")
        if topic is not None and (not isinstance(topic, str) or len(topic) > 1024):
            raise form_error("topic", "Must be 1024 or fewer in length.")
        for key in ("nsfw", "archived", "locked", "invitable"):
            if key in changes and not isinstance(changes[key], bool):
                raise form_error(key, "Must be a boolean.")
        slowmode = changes.get("rate_limit_per_user", 0)
        if (
            isinstance(slowmode, bool)
            or not isinstance(slowmode, int)
            or not 0 <= slowmode <= 21600
        ):
            raise form_error("rate_limit_per_user", "Must be between 0 and 21600.")
        for key in ("auto_archive_duration", "default_auto_archive_duration"):
            if key in changes and changes[key] not in ARCHIVE_DURATIONS:
                raise form_error(key, f"Must be one of {ARCHIVE_DURATIONS}.")

    def _check_thread_edit(self, thread: Channel, changes: JSON, actor_id: int) -> None:
        # https://discord.com/developers/docs/topics/threads#editing-deleting-threads
        if thread.archived and changes.get("archived") is not False:
            raise DiscordHTTPError(400, THREAD_ARCHIVED, "Thread is archived")
        moderator = self.can_manage_threads(thread, actor_id)
        creator = thread.owner_id == actor_id
        missing = DiscordHTTPError(403, MISSING_PERMISSIONS, "Missing Permissions")
        if {"locked", "rate_limit_per_user", "invitable"} & set(changes) and not moderator:
            raise missing
        if {"name", "archived", "auto_archive_duration"} & set(changes) and not (
            moderator or creator
        ):
            raise missing

    async def channel_updated(self, channel: Channel) -> None:
        """Dispatch THREAD_UPDATE (threads) or CHANNEL_UPDATE (channels)."""
        payload = channel.to_payload()
        event = "THREAD_UPDATE" if channel.is_thread else "CHANNEL_UPDATE"
        await self.gateway.dispatch(
            event, lambda i: payload if i & INTENT_GUILDS else None, guild_id=channel.guild_id
        )
        await self.notify()

    # ------------------------------------------------------------------ direct messages
    def open_dm(self, user_id: int) -> Channel:
        """The bot's DM channel with a user, created on first use (ids are stable)."""
        user = self.get_user(user_id)
        if user.id == self.bot.id:
            raise form_error("recipient_id", "Cannot open a DM with yourself")
        channel_id = self.dm_channels.get(user.id)
        if channel_id is not None:
            return self.channels[channel_id]
        channel = Channel(
            id=self.snowflake(), guild_id=None, name="", type=CHANNEL_DM, recipient_id=user.id
        )
        self.channels[channel.id] = channel
        self.channel_messages[channel.id] = []
        self.dm_channels[user.id] = channel.id
        return channel

    # ------------------------------------------------------------------ setup helpers
    def new_guild(self, name: str, owner_id: int | None, *, guild_id: int | None = None) -> Guild:
        guild_id = self.snowflake() if guild_id is None else guild_id
        if owner_id is None:
            owner = User(id=self.snowflake(), username=f"{name.lower().replace(' ', '-')}-owner")
            self.users[owner.id] = owner
            owner_id = owner.id
        guild = Guild(id=guild_id, name=name, owner_id=owner_id)
        # The @everyone role shares the guild's id.
        guild.roles[guild_id] = Role(
            id=guild_id,
            guild_id=guild_id,
            name="@everyone",
            permissions=DEFAULT_EVERYONE_PERMISSIONS,
        )
        bot_role = Role(
            id=self.snowflake(),
            guild_id=guild_id,
            name=self.bot.username,
            permissions=self.bot_permissions,
            position=1,
            managed=True,
            bot_id=self.bot.id,
        )
        guild.roles[bot_role.id] = bot_role
        guild.bot_role_id = bot_role.id
        guild.members[owner_id] = Member(user_id=owner_id, guild_id=guild_id)
        guild.members[self.bot.id] = Member(
            user_id=self.bot.id, guild_id=guild_id, roles=[bot_role.id]
        )
        self.guilds[guild_id] = guild
        return guild

    def new_channel(self, guild_id: int, name: str, **fields: Any) -> Channel:
        guild = self.get_guild(guild_id)
        fields.setdefault("type", CHANNEL_TEXT)
        fields.setdefault("position", len(guild.channel_ids))
        channel = Channel(id=self.snowflake(), guild_id=guild_id, name=name, **fields)
        self.channels[channel.id] = channel
        if not channel.is_thread:
            guild.channel_ids.append(channel.id)
        self.channel_messages[channel.id] = []
        return channel

    def store_upload(
        self, upload: Upload, channel_id: int, *, ephemeral: bool = False
    ) -> Attachment:
        attachment_id = self.snowflake()
        # Discord replaces whitespace in uploaded file names with underscores.
        filename = re.sub(r"\s", "_", upload.filename)
        content_type = upload.content_type or guess_content_type(filename, upload.data)
        width, height = image_size(upload.data, content_type)
        query = f"ex={int(time.time()) + 86400:x}&is={int(time.time()):x}&hm={attachment_id:x}&"
        quoted = urllib.parse.quote(filename)
        if ephemeral:
            path = f"ephemeral-attachments/{self.application_id}/{attachment_id}/{quoted}"
        else:
            path = f"attachments/{channel_id}/{attachment_id}/{quoted}"
        attachment = Attachment(
            id=attachment_id,
            filename=filename,
            data=upload.data,
            content_type=content_type,
            url=f"{self.base_url}/{path}?{query}",
            proxy_url=f"{self.base_url}/media/{path}?{query}",
            width=width,
            height=height,
            description=upload.description,
            ephemeral=ephemeral,
        )
        self.attachments[attachment_id] = attachment
        return attachment

    # ------------------------------------------------------------------ payload builders
    def user_payload(self, user_id: int) -> JSON:
        return self.get_user(user_id).to_payload()

    def member_payload(
        self,
        guild_id: int,
        user_id: int,
        *,
        with_user: bool = True,
        in_channel: Channel | None = None,
    ) -> JSON:
        """The member object; ``in_channel``: with ``permissions`` there (interactions only)."""
        member = self.get_member(guild_id, user_id)
        payload: JSON = {
            "roles": [str(r) for r in member.roles],
            "nick": member.nick,
            "avatar": None,
            "banner": None,
            "joined_at": iso(member.joined_at),
            "premium_since": None,
            "deaf": False,
            "mute": False,
            "pending": False,
            "flags": 0,
            "communication_disabled_until": None,
        }
        if with_user:
            payload["user"] = self.user_payload(user_id)
        if in_channel is not None:
            payload["permissions"] = str(self.channel_permissions(in_channel, user_id))
        return payload

    def channel_payload(self, channel_id: int, *, for_user: int | None = None) -> JSON:
        channel = self.get_channel(channel_id)
        payload = channel.to_payload()
        if channel.recipient_id is not None:
            payload["recipients"] = [self.user_payload(channel.recipient_id)]
        if for_user is not None:
            payload["permissions"] = str(self.channel_permissions(channel, for_user))
        return payload

    def guild_create_payload(self, guild: Guild, intents: int) -> JSON:
        # Without the privileged members intent Discord only sends the bot itself.
        member_ids = list(guild.members) if intents & INTENT_GUILD_MEMBERS else [self.bot.id]
        now = iso(utcnow())
        return {
            "id": str(guild.id),
            "name": guild.name,
            "icon": None,
            "owner_id": str(guild.owner_id),
            "unavailable": False,
            "large": False,
            "member_count": len(guild.members),
            "joined_at": iso(guild.created_at),
            "features": [],
            "preferred_locale": "en-US",
            "verification_level": 0,
            "default_message_notifications": 0,
            "explicit_content_filter": 0,
            "mfa_level": 0,
            "nsfw_level": 0,
            "premium_tier": 0,
            "system_channel_flags": 0,
            "system_channel_id": (
                str(guild.system_channel_id) if guild.system_channel_id is not None else None
            ),
            "roles": [role.to_payload() for role in guild.roles.values()],
            "emojis": [],
            "stickers": [],
            "channels": [self.channels[c].to_payload() for c in guild.channel_ids],
            "threads": [
                c.to_payload()
                for c in self.channels.values()
                if c.guild_id == guild.id and c.is_thread and not c.archived
            ],
            "members": [self.member_payload(guild.id, uid) for uid in member_ids],
            "voice_states": [],
            "presences": [],
            "stage_instances": [],
            "guild_scheduled_events": [],
            "soundboard_sounds": [],
            "application_id": None,
            "created_at": now,
        }

    def message_payload(
        self, message: Message, *, gateway: bool = False, nested: bool = False
    ) -> JSON:
        payload: JSON = {
            "id": str(message.id),
            "channel_id": str(message.channel_id),
            "type": message.type,
            "content": message.content,
            "author": self.user_payload(message.author_id),
            "attachments": [a.to_payload() for a in message.attachments],
            "embeds": message.embeds,
            "components": message.components,
            "mentions": [self._mention_payload(message, uid, gateway) for uid in message.mentions],
            "mention_roles": [str(r) for r in message.mention_roles],
            "mention_everyone": False,
            "pinned": False,
            "tts": message.tts,
            "timestamp": iso(message.created_at),
            "edited_timestamp": iso(message.edited_at),
            "flags": message.flags,
        }
        if message.nonce is not None:
            payload["nonce"] = message.nonce
        if message.webhook_id is not None:
            payload["webhook_id"] = str(message.webhook_id)
        if message.application_id is not None:
            payload["application_id"] = str(message.application_id)
        if message.interaction_metadata is not None:
            payload["interaction_metadata"] = message.interaction_metadata
        if message.interaction is not None:
            payload["interaction"] = message.interaction
        if message.poll is not None:
            payload["poll"] = message.poll
        if message.reactions:
            payload["reactions"] = [
                {
                    "emoji": {"id": None, "name": emoji},
                    "count": len(users),
                    "count_details": {"burst": 0, "normal": len(users)},
                    "me": self.bot.id in users,
                    "me_burst": False,
                    "burst_colors": [],
                }
                for emoji, users in message.reactions.items()
                if users
            ]
        if message.thread_id is not None and message.thread_id in self.channels:
            payload["thread"] = self.channels[message.thread_id].to_payload()
        if message.message_reference is not None:
            payload["message_reference"] = message.message_reference
            if not nested:
                referenced = self.messages.get(message.reply_to or 0)
                payload["referenced_message"] = (
                    None
                    if referenced is None or referenced.deleted
                    else self.message_payload(referenced, gateway=gateway, nested=True)
                )
        if gateway and message.guild_id is not None:
            payload["guild_id"] = str(message.guild_id)
            guild = self.guilds.get(message.guild_id)
            if message.webhook_id is None and guild and message.author_id in guild.members:
                payload["member"] = self.member_payload(
                    message.guild_id, message.author_id, with_user=False
                )
        return payload

    def _mention_payload(self, message: Message, user_id: int, gateway: bool) -> JSON:
        payload = self.user_payload(user_id)
        guild = self.guilds.get(message.guild_id or 0)
        if gateway and guild is not None and user_id in guild.members:
            payload["member"] = self.member_payload(guild.id, user_id, with_user=False)
        return payload

    def gateway_message_view(self, message: Message) -> Callable[[int], JSON | None]:
        """MESSAGE_CREATE/UPDATE payload as a session with the given intents receives it."""
        full = self.message_payload(message, gateway=True)

        def view(intents: int) -> JSON | None:
            if not self._message_intent(message.guild_id, intents):
                return None
            if (
                intents & INTENT_MESSAGE_CONTENT
                or message.guild_id is None  # DMs with the bot always carry content
                or message.author_id == self.bot.id
                or self.bot.id in message.mentions
            ):
                return full
            # Without the MESSAGE_CONTENT intent these fields arrive empty.
            redacted = dict(full)
            redacted.update(content="", embeds=[], attachments=[], components=[])
            redacted.pop("poll", None)
            return redacted

        return view

    # ------------------------------------------------------------------ message lifecycle
    def resolve_mentions(
        self, content: str, allowed_mentions: JSON | None, reply_author: int | None
    ) -> tuple[list[int], list[int]]:
        """(user ids, role ids) this content pings, honouring ``allowed_mentions`` like Discord."""
        users = [int(u) for u in USER_MENTION.findall(content) if int(u) in self.users]
        roles = [int(r) for r in ROLE_MENTION.findall(content)]
        if allowed_mentions is not None:
            parse = allowed_mentions.get("parse", [])
            if "users" not in parse:
                explicit = {int(u) for u in allowed_mentions.get("users", [])}
                users = [u for u in users if u in explicit]
            if "roles" not in parse:
                explicit = {int(r) for r in allowed_mentions.get("roles", [])}
                roles = [r for r in roles if r in explicit]
            ping_reply = bool(allowed_mentions.get("replied_user", False))
        else:
            ping_reply = True
        if reply_author is not None and ping_reply and reply_author not in users:
            users.append(reply_author)
        return list(dict.fromkeys(users)), list(dict.fromkeys(roles))

    async def add_message(self, message: Message) -> Message:
        """Store a new message and dispatch MESSAGE_CREATE (unless it is ephemeral)."""
        self.messages[message.id] = message
        self.channel_messages.setdefault(message.channel_id, []).append(message.id)
        channel = self.channels.get(message.channel_id)
        if channel is not None and not message.ephemeral:
            channel.last_message_id = message.id
            if channel.is_thread:
                channel.message_count += 1
        if not message.ephemeral:
            await self.gateway.dispatch(
                "MESSAGE_CREATE", self.gateway_message_view(message), guild_id=message.guild_id
            )
        await self.notify()
        return message

    async def message_edited(self, message: Message, previous: JSON, *, was_loading: bool) -> None:
        message.history.append(previous)
        message.edits += 1
        if not was_loading:
            message.edited_at = utcnow()
        if not message.ephemeral and not message.deleted:
            await self.gateway.dispatch(
                "MESSAGE_UPDATE", self.gateway_message_view(message), guild_id=message.guild_id
            )
        await self.notify()

    async def delete_message(self, message: Message) -> None:
        message.deleted = True
        if not message.ephemeral:
            payload: JSON = {"id": str(message.id), "channel_id": str(message.channel_id)}
            if message.guild_id is not None:
                payload["guild_id"] = str(message.guild_id)
            guild_id = message.guild_id
            await self.gateway.dispatch(
                "MESSAGE_DELETE",
                lambda intents: payload if self._message_intent(guild_id, intents) else None,
                guild_id=guild_id,
            )
        await self.notify()

    @staticmethod
    def _message_intent(guild_id: int | None, intents: int) -> bool:
        """MESSAGE_* events need GUILD_MESSAGES in guilds and DIRECT_MESSAGES in DMs."""
        return bool(intents & (INTENT_GUILD_MESSAGES if guild_id else INTENT_DIRECT_MESSAGES))

    async def add_thread(self, thread: Channel, *, bot_is_member: bool = True) -> None:
        payload = thread.to_payload()
        payload["newly_created"] = True
        if bot_is_member:
            payload["member"] = {
                "id": str(thread.id),
                "user_id": str(self.bot.id),
                "join_timestamp": iso(thread.created_at),
                "flags": 0,
            }
        await self.gateway.dispatch(
            "THREAD_CREATE",
            lambda intents: payload if intents & INTENT_GUILDS else None,
            guild_id=thread.guild_id,
        )
        await self.notify()

    # ------------------------------------------------------------------ commands
    def commands_for(self, guild_id: int | None) -> list[JSON]:
        if guild_id is None:
            return self.global_commands
        return self.guild_commands.setdefault(guild_id, [])

    def find_command(self, name: str, guild_id: int | None, type_: int) -> JSON:
        scopes: Iterable[int | None] = (guild_id, None) if guild_id is not None else (None,)
        for scope in scopes:
            for command in self.commands_for(scope):
                if command["name"] == name and command.get("type", 1) == type_:
                    return command
        registered = [(c["name"], c.get("type", 1)) for s in scopes for c in self.commands_for(s)]
        raise LookupError(
            f"no registered command {name!r} of type {type_}; registered: {registered}"
        )
