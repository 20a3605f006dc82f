"""Applying a message create/edit payload (JSON or multipart) to a stored message.

Validates like Discord does for the limits a bot is likely to hit (content length, embed
limits, component layout and custom_id uniqueness, empty messages, file size) and resolves
``attachment://`` references in embeds.
"""

from __future__ import annotations

from typing import Any

from ._util import (
    CANNOT_SEND_EMPTY,
    FLAG_COMPONENTS_V2,
    FLAG_EPHEMERAL,
    FLAG_LOADING,
    JSON,
    REQUEST_TOO_LARGE,
    DiscordHTTPError,
    form_error,
)
from .models import Attachment, Message, Upload, iter_components
from .state import DiscordState

EMBED_LIMITS = {"title": 256, "description": 4096}
ACTION_ROW = 1
BUTTON = 2
LINK_STYLE = 5
PREMIUM_STYLE = 6
SELECT_TYPES = (3, 5, 6, 7, 8)


class MessageWriter:
    def __init__(self, state: DiscordState) -> None:
        self.state = state

    def apply(
        self,
        message: Message,
        payload: JSON,
        files: dict[int, Upload],
        *,
        editing: bool,
        allowed_flags: int,
    ) -> None:
        """Apply ``payload`` (+ uploaded ``files``) to ``message`` after validating it.

        ``message`` is only mutated once validation has passed.
        """
        content = message.content
        if "content" in payload:
            content = str(payload["content"] or "")
        embeds = message.embeds
        if "embeds" in payload:
            embeds = [self._normalize_embed(e, i) for i, e in enumerate(payload["embeds"] or [])]
        components = message.components
        if "components" in payload:
            components = [dict(c) for c in payload["components"] or []]
        flags = message.flags
        if payload.get("flags") is not None:
            requested = int(payload["flags"])
            if requested & ~(allowed_flags | FLAG_EPHEMERAL | FLAG_LOADING):
                raise form_error("flags", "Invalid flags")
            keep = message.flags & (FLAG_EPHEMERAL | FLAG_LOADING) if editing else 0
            settable = allowed_flags if not editing else allowed_flags & ~FLAG_EPHEMERAL
            flags = keep | (requested & settable)
        ephemeral = bool(flags & FLAG_EPHEMERAL)
        attachments = self._attachments(
            message, payload, files, editing=editing, ephemeral=ephemeral
        )

        self._validate(content, embeds, components, attachments, flags)
        has_body = content or embeds or attachments or components
        if not has_body and not payload.get("sticker_ids") and not payload.get("poll"):
            raise DiscordHTTPError(400, CANNOT_SEND_EMPTY, "Cannot send an empty message")

        message.content = content
        message.embeds = [self._resolve_embed_attachments(e, attachments) for e in embeds]
        message.components = number_components(components)
        message.flags = flags
        message.attachments = attachments
        if "allowed_mentions" in payload:
            message.allowed_mentions = payload["allowed_mentions"]
        if not editing:
            message.tts = bool(payload.get("tts", False))
            message.sticker_ids = [str(s) for s in payload.get("sticker_ids") or []]
            message.poll = payload.get("poll")
        reply_author = None
        referenced = self.state.messages.get(message.reply_to or 0)
        if referenced is not None and referenced.author_id != self.state.bot.id:
            reply_author = referenced.author_id
        message.mentions, message.mention_roles = self.state.resolve_mentions(
            message.content, message.allowed_mentions, reply_author
        )

    # ------------------------------------------------------------------ attachments
    def _attachments(
        self,
        message: Message,
        payload: JSON,
        files: dict[int, Upload],
        *,
        editing: bool,
        ephemeral: bool,
    ) -> list[Attachment]:
        # Discord counts the files of one request together against the upload limit (10 MiB
        # without boosts): four 4 MiB images are refused although each would pass alone.
        if sum(len(upload.data) for upload in files.values()) > self.state.attachment_size_limit:
            raise DiscordHTTPError(413, REQUEST_TOO_LARGE, "Request entity too large")
        existing = {a.id: a for a in message.attachments} if editing else {}
        if "attachments" not in payload or payload["attachments"] is None:
            kept = list(message.attachments) if editing else []
            return kept + [
                self.state.store_upload(files[i], message.channel_id, ephemeral=ephemeral)
                for i in sorted(files)
            ]
        result: list[Attachment] = []
        used: set[int] = set()
        for position, entry in enumerate(payload["attachments"]):
            try:
                attachment_id = int(entry["id"])
            except (KeyError, TypeError, ValueError):
                raise form_error(f"attachments.{position}.id", "Invalid attachment id") from None
            if attachment_id in existing:
                result.append(existing[attachment_id])
            elif attachment_id in files:
                upload = files[attachment_id]
                upload = Upload(
                    filename=str(entry.get("filename") or upload.filename),
                    data=upload.data,
                    content_type=upload.content_type,
                    description=entry.get("description"),
                )
                result.append(
                    self.state.store_upload(upload, message.channel_id, ephemeral=ephemeral)
                )
                used.add(attachment_id)
            else:
                raise form_error(
                    f"attachments.{position}.id",
                    f"Attachment {attachment_id} is neither on the message nor uploaded",
                    "ATTACHMENT_NOT_FOUND",
                )
        for index in sorted(set(files) - used):
            result.append(
                self.state.store_upload(files[index], message.channel_id, ephemeral=ephemeral)
            )
        return result

    # ------------------------------------------------------------------ embeds
    @staticmethod
    def _normalize_embed(embed: Any, index: int) -> JSON:
        if not isinstance(embed, dict):
            raise form_error(f"embeds.{index}", "Must be an object")
        normalized = dict(embed)
        normalized.setdefault("type", "rich")
        return normalized

    @staticmethod
    def _resolve_embed_attachments(embed: JSON, attachments: list[Attachment]) -> JSON:
        by_name = {a.filename: a for a in attachments}
        resolved = dict(embed)
        for key in ("image", "thumbnail"):
            media = resolved.get(key)
            if isinstance(media, dict) and str(media.get("url", "")).startswith("attachment://"):
                attachment = by_name.get(media["url"].removeprefix("attachment://"))
                if attachment is not None:
                    resolved[key] = {
                        **media,
                        "url": attachment.url,
                        "proxy_url": attachment.proxy_url,
                        "width": attachment.width,
                        "height": attachment.height,
                        "content_type": attachment.content_type,
                    }
        return resolved

    # ------------------------------------------------------------------ validation
    def _validate(
        self,
        content: str,
        embeds: list[JSON],
        components: list[JSON],
        attachments: list[Attachment],
        flags: int,
    ) -> None:
        if len(content) > 2000:
            raise form_error("content", "Must be 2000 or fewer in length.", "BASE_TYPE_MAX_LENGTH")
        if len(embeds) > 10:
            raise form_error("embeds", "Must be 10 or fewer in length.", "BASE_TYPE_MAX_LENGTH")
        if len(attachments) > 10:
            raise form_error(
                "attachments", "Must be 10 or fewer in length.", "BASE_TYPE_MAX_LENGTH"
            )
        total = 0
        for i, embed in enumerate(embeds):
            total += self._validate_embed(embed, i)
        if total > 6000:
            raise form_error("embeds", "Embed size exceeds maximum size of 6000")
        if flags & FLAG_COMPONENTS_V2:
            if content or embeds:
                raise form_error(
                    "content", "content and embeds cannot be used with IS_COMPONENTS_V2"
                )
        else:
            if len(components) > 5:
                raise form_error(
                    "components", "Must be 5 or fewer in length.", "BASE_TYPE_MAX_LENGTH"
                )
            for i, row in enumerate(components):
                self._validate_row(row, f"components.{i}")
        seen: set[str] = set()
        for component in iter_components(components):
            custom_id = component.get("custom_id")
            if custom_id is None:
                continue
            if not isinstance(custom_id, str) or not 1 <= len(custom_id) <= 100:
                raise form_error(
                    "components", f"Invalid custom_id {custom_id!r} (1-100 characters)"
                )
            if custom_id in seen:
                raise form_error(
                    "components",
                    f"Component custom id cannot be duplicated: {custom_id}",
                    "COMPONENT_CUSTOM_ID_DUPLICATED",
                )
            seen.add(custom_id)

    @staticmethod
    def _validate_embed(embed: JSON, index: int) -> int:
        size = 0
        for key, limit in EMBED_LIMITS.items():
            value = str(embed.get(key) or "")
            if len(value) > limit:
                raise form_error(f"embeds.{index}.{key}", f"Must be {limit} or fewer in length.")
            size += len(value)
        fields = embed.get("fields") or []
        if len(fields) > 25:
            raise form_error(f"embeds.{index}.fields", "Must be 25 or fewer in length.")
        for j, item in enumerate(fields):
            name, value = str(item.get("name") or ""), str(item.get("value") or "")
            if not name or len(name) > 256:
                raise form_error(f"embeds.{index}.fields.{j}.name", "Must be 1-256 in length.")
            if not value or len(value) > 1024:
                raise form_error(f"embeds.{index}.fields.{j}.value", "Must be 1-1024 in length.")
            size += len(name) + len(value)
        footer = str((embed.get("footer") or {}).get("text") or "")
        author = str((embed.get("author") or {}).get("name") or "")
        if len(footer) > 2048 or len(author) > 256:
            raise form_error(f"embeds.{index}", "footer/author text too long")
        return size + len(footer) + len(author)

    @staticmethod
    def _validate_row(row: JSON, path: str) -> None:
        if row.get("type") != ACTION_ROW:
            raise form_error(path, "Top-level components must be action rows (type 1)")
        children = row.get("components") or []
        if not 1 <= len(children) <= 5:
            raise form_error(f"{path}.components", "Action rows hold 1-5 components")
        if any(c.get("type") in SELECT_TYPES for c in children) and len(children) > 1:
            raise form_error(f"{path}.components", "A select menu must be alone in its action row")
        for j, child in enumerate(children):
            if child.get("type") != BUTTON:
                continue
            style = child.get("style")
            where = f"{path}.components.{j}"
            if style == LINK_STYLE:
                if not child.get("url") or "custom_id" in child:
                    raise form_error(where, "Link buttons need a url and no custom_id")
            elif style != PREMIUM_STYLE and not child.get("custom_id"):
                raise form_error(where, "Non-link buttons need a custom_id")
            if len(str(child.get("label") or "")) > 80:
                raise form_error(f"{where}.label", "Must be 80 or fewer in length.")


def number_components(components: list[JSON]) -> list[JSON]:
    """Give every component a numeric ``id`` like Discord does (depth first, from 1)."""
    counter = 0

    def walk(component: JSON) -> JSON:
        nonlocal counter
        counter += 1
        numbered = dict(component)
        numbered.setdefault("id", counter)
        if "components" in numbered:
            numbered["components"] = [walk(c) for c in numbered["components"]]
        for key in ("accessory", "component"):
            if isinstance(numbered.get(key), dict):
                numbered[key] = walk(numbered[key])
        return numbered

    return [walk(c) for c in components]
