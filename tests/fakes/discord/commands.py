"""Application command validation and storage shaped like Discord's responses."""

from __future__ import annotations

import re
from typing import Any

from ._util import JSON, form_error
from .state import DiscordState

CHAT_INPUT, USER_COMMAND, MESSAGE_COMMAND = 1, 2, 3
SUB_COMMAND, SUB_COMMAND_GROUP = 1, 2
STRING, INTEGER, BOOLEAN, USER, CHANNEL, ROLE, MENTIONABLE, NUMBER, ATTACHMENT = range(3, 12)
CHAT_NAME = re.compile(r"^[-_'\w]{1,32}$")


def _check_name(name: Any, path: str, *, chat: bool) -> None:
    if not isinstance(name, str) or not 1 <= len(name) <= 32:
        raise form_error(f"{path}.name", "Must be between 1 and 32 in length.")
    if chat and (not CHAT_NAME.match(name) or name != name.lower()):
        raise form_error(
            f"{path}.name", "Command name is invalid", "APPLICATION_COMMAND_INVALID_NAME"
        )


def _check_description(description: Any, path: str) -> None:
    if not isinstance(description, str) or not 1 <= len(description) <= 100:
        raise form_error(f"{path}.description", "Must be between 1 and 100 in length.")


def validate_command(command: JSON, path: str) -> None:
    type_ = int(command.get("type", CHAT_INPUT))
    if type_ not in (CHAT_INPUT, USER_COMMAND, MESSAGE_COMMAND):
        raise form_error(f"{path}.type", f"Unsupported command type {type_}")
    chat = type_ == CHAT_INPUT
    _check_name(command.get("name"), path, chat=chat)
    if chat:
        _check_description(command.get("description"), path)
        _validate_options(command.get("options") or [], f"{path}.options", depth=0)
    else:
        if command.get("description"):
            raise form_error(
                f"{path}.description", "Context menu commands cannot have a description"
            )
        if command.get("options"):
            raise form_error(f"{path}.options", "Context menu commands cannot have options")


def _validate_options(options: list[JSON], path: str, *, depth: int) -> None:
    if len(options) > 25:
        raise form_error(path, "Must be 25 or fewer in length.")
    names: set[str] = set()
    kinds = {int(o.get("type", 0)) in (SUB_COMMAND, SUB_COMMAND_GROUP) for o in options}
    if len(kinds) > 1:
        raise form_error(path, "Sub-commands and sub-command groups cannot be mixed with options")
    seen_optional = False
    for i, option in enumerate(options):
        where = f"{path}.{i}"
        type_ = int(option.get("type", 0))
        if not SUB_COMMAND <= type_ <= ATTACHMENT:
            raise form_error(f"{where}.type", f"Invalid option type {type_}")
        _check_name(option.get("name"), where, chat=True)
        _check_description(option.get("description"), where)
        if option["name"] in names:
            raise form_error(f"{where}.name", "Option names must be unique", "DUPLICATE_NAME")
        names.add(option["name"])
        if type_ == SUB_COMMAND_GROUP:
            if depth > 0:
                raise form_error(where, "Sub-command groups cannot be nested")
            children = option.get("options") or []
            if any(int(c.get("type", 0)) != SUB_COMMAND for c in children):
                raise form_error(f"{where}.options", "Groups may only contain sub-commands")
            _validate_options(children, f"{where}.options", depth=depth + 1)
            continue
        if type_ == SUB_COMMAND:
            if depth > 1:
                raise form_error(where, "Sub-commands nested too deeply")
            _validate_options(option.get("options") or [], f"{where}.options", depth=2)
            continue
        if option.get("required"):
            if seen_optional:
                raise form_error(
                    where, "Required options must be placed before non-required options"
                )
        else:
            seen_optional = True
        choices = option.get("choices") or []
        if choices:
            if type_ not in (STRING, INTEGER, NUMBER):
                raise form_error(f"{where}.choices", "Choices are only for string/integer/number")
            if len(choices) > 25:
                raise form_error(f"{where}.choices", "Must be 25 or fewer in length.")
            if option.get("autocomplete"):
                raise form_error(
                    f"{where}.autocomplete", "Autocomplete cannot be used with choices"
                )
            for j, choice in enumerate(choices):
                if not 1 <= len(str(choice.get("name", ""))) <= 100:
                    raise form_error(
                        f"{where}.choices.{j}.name", "Must be between 1 and 100 in length."
                    )


def _clean(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value


def store_commands(
    state: DiscordState, guild_id: int | None, payload: list[JSON], *, replace: bool
) -> list[JSON]:
    """Validate and store commands; ids stay stable for the same (scope, type, name)."""
    if not isinstance(payload, list):
        raise form_error("", "Expected a list of commands")
    for i, command in enumerate(payload):
        validate_command(command, str(i))
    per_type: dict[tuple[int, str], int] = {}
    for i, command in enumerate(payload):
        key = (int(command.get("type", CHAT_INPUT)), command["name"])
        if key in per_type:
            raise form_error(
                f"{i}.name", "Application command names must be unique", "DUPLICATE_NAME"
            )
        per_type[key] = i
    stored = [stored_command(state, guild_id, command) for command in payload]
    existing = state.commands_for(guild_id)
    if replace:
        existing[:] = stored
    else:
        for command in stored:
            existing[:] = [
                c for c in existing if (c["type"], c["name"]) != (command["type"], command["name"])
            ]
            existing.append(command)
    return stored


def stored_command(state: DiscordState, guild_id: int | None, command: JSON) -> JSON:
    type_ = int(command.get("type", CHAT_INPUT))
    key = (guild_id, type_, command["name"])
    command_id = state.command_ids.setdefault(key, state.snowflake())
    permissions = command.get("default_member_permissions")
    stored: JSON = {
        "id": str(command_id),
        "application_id": str(state.application_id),
        "version": str(state.snowflake()),
        "type": type_,
        "name": command["name"],
        "name_localizations": command.get("name_localizations"),
        "description": command.get("description") or "",
        "description_localizations": command.get("description_localizations"),
        "default_member_permissions": None if permissions is None else str(int(permissions)),
        "dm_permission": command.get("dm_permission", True),
        "contexts": command.get("contexts"),
        "integration_types": command.get("integration_types") or [0],
        "nsfw": bool(command.get("nsfw", False)),
    }
    options = _clean(command.get("options") or [])
    if options:
        stored["options"] = options
    if guild_id is not None:
        stored["guild_id"] = str(guild_id)
    return stored
