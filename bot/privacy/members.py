"""A member's own data: all of it as JSON (/privacy export), or their prompts and images
erased (/privacy delete). Both cover every server and direct messages.

What is exported: every table that names the member (see docs/privacy.md), without the
bot's internals (provider task ids and links, credentials, process leases) and without image
bytes (the result images are the member's messages in Discord). The file is bounded: rows go
in newest first until `max_bytes`, and what did not fit is counted in `omitted`.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from bot.privacy.batches import (
    PROMPT_ACTIONS_SQL,
    PROMPT_REMOVED,
    Change,
    blank_approval_prompts,
    blank_job_prompts,
    deleting,
    in_batches,
    json_text,
    setting,
)
from bot.servers.audit import AuditEntry, AuditLog
from bot.storage.db import Database, Row, Tx
from bot.storage.rows import marks
from bot.text import plural

log = logging.getLogger(__name__)

# Discord takes 10 MiB per upload from a bot in a server without boosts; the JSON stays
# well below, with room for the request around it.
EXPORT_MAX_BYTES = 8 * 1024 * 1024
_PAGE = 500
ERASURE_ACTION = "privacy delete"
DIRECT_MESSAGES = 0  # the ledger's and the audit log's "server" for direct messages


@dataclass(frozen=True)
class Section:
    """One part of the export: rows of one table about the member, newest first."""

    name: str
    sql: str  # selects the columns shown; `?` is the member's id (as often as it appears)
    order: str  # a unique ORDER BY (newest first), for paging
    params: int = 1
    convert: Callable[[dict[str, Any]], dict[str, Any]] | None = None


def _job(row: dict[str, Any]) -> dict[str, Any]:
    params = json.loads(row.pop("params"))
    if row["prompt_removed_at"] is not None:
        row["prompt"] = None  # blanked: say so rather than show ""
    row.pop("parent_purged")
    row["width"], row["height"] = params.get("width"), params.get("height")
    row["seed"], row["options"] = params.get("seed"), params.get("options")
    return row


def _approval(row: dict[str, Any]) -> dict[str, Any]:
    request = json.loads(row.pop("request"))
    params = request.get("params") or {}
    row["variant"] = request.get("variant")
    row["prompt"] = params.get("prompt") or None
    row["width"], row["height"] = params.get("width"), params.get("height")
    return row


SECTIONS = (
    Section(
        "jobs",
        "SELECT id, created_at, guild_id, channel_id, variant, provider, prompt, params,"
        " parent_job_id, parent_purged, state, estimated_cost, cost, result_seed, result_width,"
        " result_height, error, submitted_at, ready_at, finished_at, reference_count,"
        " result_message_id, prompt_removed_at, role_ids, failover_from, failover_reason,"
        " (SELECT count(*) FROM job_inputs WHERE job_inputs.job_id = jobs.id)"
        " AS reference_images_stored,"
        " (SELECT count(*) FROM job_outputs WHERE job_outputs.job_id = jobs.id)"
        " AS result_images_stored"
        " FROM jobs WHERE user_id = ?",
        "created_at DESC, id DESC",
        convert=_job,
    ),
    Section(
        "ledger",
        "SELECT job_id, guild_id, variant, reserved_at, status, reserved_mc, reserved_images,"
        " charged_mc, charged_images, settled_at, settled_by FROM ledger WHERE user_id = ?",
        "reserved_at DESC, job_id DESC",
    ),
    Section(
        "allowance_overrides",
        "SELECT guild_id, period, metric, amount, updated_at, updated_by FROM quota_limits"
        " WHERE scope = 'user' AND target_id = ?",
        "updated_at DESC, guild_id DESC, period DESC, metric DESC",
    ),
    Section(
        "allowance_grants",
        "SELECT id, guild_id, period, period_start, metric, amount, granted_at, granted_by"
        " FROM quota_grants WHERE user_id = ?",
        "granted_at DESC, id DESC",
    ),
    Section(
        "allowance_history",
        "SELECT id, at, guild_id, actor_id, action, period, metric, before, after, summary"
        " FROM quota_audit WHERE scope = 'user' AND target_id = ?",
        "at DESC, id DESC",
    ),
    Section(
        "strikes",
        "SELECT id, guild_id, at, term, prompt, cleared FROM strikes WHERE user_id = ?",
        "at DESC, id DESC",
    ),
    Section(
        "blocks",
        "SELECT guild_id, until, reason, blocked_by, at FROM blocks WHERE user_id = ?",
        "at DESC, guild_id DESC",
    ),
    Section(
        "approvals",
        "SELECT id, created_at, guild_id, channel_id, request, state, decided_by, decided_at,"
        " reason, job_id FROM approvals WHERE user_id = ?",
        "created_at DESC, id DESC",
        convert=_approval,
    ),
    Section(
        "audit_log",
        "SELECT id, at, guild_id, actor_id, action, target_id, job_id, detail FROM audit_log"
        " WHERE target_id = ? OR (actor_id = ? AND target_id IS NULL)",
        "at DESC, id DESC",
        params=2,
    ),
    Section(
        "studios_started",
        "SELECT thread_id, guild_id, parent_channel_id, theme, required_words, ends_at, state,"
        " created_at FROM studios WHERE starter_id = ?",
        "created_at DESC, thread_id DESC",
    ),
    Section(
        "favourites",
        "SELECT * FROM (SELECT f.job_id, f.created_at, j.guild_id FROM favourites f"
        " JOIN jobs j ON j.id = f.job_id WHERE f.user_id = ?) AS favourite",
        "created_at DESC, job_id DESC",
    ),
    Section(
        "showcase_shares",
        "SELECT job_id, guild_id, channel_id, message_id, claimed_at, posted_at"
        " FROM showcase_posts WHERE shared_by = ?",
        "claimed_at DESC, job_id DESC",
    ),
    Section(
        "server_memberships_seen",
        "SELECT guild_id, seen_at FROM server_members WHERE user_id = ?",
        "seen_at DESC, guild_id DESC",
    ),
)
_TIMES = frozenset(
    {
        "created_at",
        "submitted_at",
        "ready_at",
        "finished_at",
        "reserved_at",
        "settled_at",
        "updated_at",
        "granted_at",
        "at",
        "until",
        "decided_at",
        "ends_at",
        "seen_at",
        "prompt_removed_at",
        "claimed_at",
        "posted_at",
    }
)
_NOTES = {
    "about": "Everything Fluxcord stores about you, from every server and direct messages."
    " Times are UTC. Credits: *_mc are millicredits (1000 = 1 credit = $0.01). guild_id 0 or"
    " null is direct messages. Images are not included: your results are your messages in"
    " Discord; reference_images_stored says how many of a job's inputs the bot still keeps.",
    "omitted_means": "Rows left out, by section, to keep the file under Discord's upload"
    " limit (the newest are kept); ask the bot's operator for the rest.",
}


@dataclass
class Export:
    data: bytes
    filename: str
    rows: dict[str, int]
    omitted: dict[str, int] = field(default_factory=dict)

    @property
    def summary(self) -> str:
        total = sum(self.rows.values())
        text = f"Here is everything the bot stores about you ({plural(total, 'record')})."
        if self.omitted:
            left = sum(self.omitted.values())
            text += (
                f" The file would pass Discord's upload limit, so the oldest"
                f" {plural(left, 'record')} are left out; the bot's operator can give you those."
            )
        return text


def _value(name: str, value: Any) -> Any:
    if name in _TIMES and isinstance(value, int | float):
        return dt.datetime.fromtimestamp(value, dt.UTC).isoformat(timespec="seconds")
    if name == "required_words" and isinstance(value, str):
        return json.loads(value)
    if name == "cleared":
        return bool(value)
    return value


def _record(section: Section, row: Row) -> dict[str, Any]:
    record = dict(zip(row.keys(), row, strict=True))
    if section.convert is not None:
        record = section.convert(record)
    return {name: _value(name, value) for name, value in record.items()}


def _encoded(document: Mapping[str, Any]) -> bytes:
    return json.dumps(document, indent=1, ensure_ascii=False, default=str).encode("utf-8")


def _size_in_list(record: dict[str, Any]) -> int:
    """The bytes `record` takes in the file: two levels in (a section's list), so each of
    its lines is indented by two more spaces, and followed by a comma and a new line."""
    text = _encoded(record)
    return len(text) + 2 * (text.count(b"\n") + 1) + 2


@dataclass
class Erasure:
    """What /privacy delete changed (counts only: the audit entry records these)."""

    prompts: int = 0
    images: int = 0
    strikes: int = 0
    audit_entries: int = 0
    approvals: int = 0
    favourites: int = 0
    unfinished: int = 0  # requests still queued or running: left alone

    @property
    def summary(self) -> str:
        done = (
            f"Erased: the prompts of {plural(self.prompts, 'image request')},"
            f" {plural(self.images, 'stored image')}, the prompts quoted in"
            f" {plural(self.strikes, 'strike')} and {plural(self.audit_entries, 'log entry')},"
            f" {plural(self.approvals, 'reviewed request')}"
            f" and {plural(self.favourites, 'favourite')}."
            " What you spent stays in the server's accounts, without your prompts."
        )
        if self.unfinished:
            done += (
                f" {plural(self.unfinished, 'request')} still in progress kept"
                " their prompt: run /privacy delete again once they are done."
            )
        return done


class MemberData:
    def __init__(
        self,
        db: Database,
        audit: AuditLog,
        *,
        clock: Callable[[], float],
        max_bytes: int = EXPORT_MAX_BYTES,
    ) -> None:
        self._db = db
        self._audit = audit
        self._clock = clock
        self.max_bytes = max_bytes

    # ----------------------------------------------------------------- export
    async def export(self, user_id: int) -> Export:
        """The member's data as JSON, read a page at a time: memory and size are bounded
        by `max_bytes`, however much there is."""
        now = self._clock()
        header = {
            "user_id": user_id,
            "exported_at": _value("at", now),
            **_NOTES,
        }
        # What is not rows: the header, and each section's name and brackets.
        budget = self.max_bytes - len(_encoded(header)) - 64 * (len(SECTIONS) + 2)
        sections: dict[str, list[dict[str, Any]]] = {}
        omitted: dict[str, int] = {}
        for section in SECTIONS:
            rows, budget, left = await self._read(section, user_id, budget)
            sections[section.name] = rows
            if left:
                omitted[section.name] = left
        document: dict[str, Any] = {**header, "omitted": omitted, **sections}
        data = _encoded(document)
        stamp = dt.datetime.fromtimestamp(now, dt.UTC).strftime("%Y%m%d-%H%M%S")
        return Export(
            data,
            f"fluxcord-data-{user_id}-{stamp}.json",
            {name: len(rows) for name, rows in sections.items()},
            omitted,
        )

    async def _read(
        self, section: Section, user_id: int, budget: int
    ) -> tuple[list[dict[str, Any]], int, int]:
        """(rows, budget left, rows left out) of one section."""
        rows: list[dict[str, Any]] = []
        offset = 0
        ids = (user_id,) * section.params
        while True:
            page = await self._db.fetch_all(
                f"{section.sql} ORDER BY {section.order} LIMIT ? OFFSET ?",
                (*ids, _PAGE, offset),
            )
            for index, row in enumerate(page):
                record = _record(section, row)
                size = _size_in_list(record)
                if size > budget:
                    left = await self._count(section, ids) - offset - index
                    return rows, 0, left
                budget -= size
                rows.append(record)
            if len(page) < _PAGE:
                return rows, budget, 0
            offset += _PAGE

    async def _count(self, section: Section, ids: tuple[int, ...]) -> int:
        return int(await self._db.fetch_value(f"SELECT count(*) FROM ({section.sql}) AS s", ids))

    # ----------------------------------------------------------------- erasure
    async def erase(self, user_id: int) -> Erasure:
        """Erase the member's prompts and stored images everywhere (finished requests; one
        still running needs its prompt), and record that it was done, with counts only.

        Kept, by design: the ledger (what each request cost, so every server's totals,
        /usage-admin and the member's own allowances stay right: an erasure is not a fresh
        allowance), and the strikes and blocks themselves (without the prompts they quote):
        moderation is not undone by erasing."""
        now = self._clock()
        erasure = Erasure()

        async def blank(tx: Tx, ids: list[Any]) -> int:
            return await blank_job_prompts(tx, ids, now)

        erasure.prompts = await in_batches(
            self._db,
            "SELECT id FROM jobs WHERE user_id = ? AND closed = 1 AND prompt_removed_at IS NULL",
            (user_id,),
            blank,
        )
        for table in ("job_inputs", "job_outputs"):
            erasure.images += await self._count_and_delete(
                f"SELECT DISTINCT job_id FROM {table} WHERE job_id IN"
                " (SELECT id FROM jobs WHERE user_id = ? AND closed = 1)",
                (user_id,),
                table,
                "job_id",
            )
        erasure.images += await self._count_and_delete(
            "SELECT DISTINCT approval_id FROM approval_inputs WHERE approval_id IN"
            " (SELECT id FROM approvals WHERE user_id = ? AND state <> 'pending')",
            (user_id,),
            "approval_inputs",
            "approval_id",
        )
        erasure.strikes = await in_batches(
            self._db,
            "SELECT id FROM strikes WHERE user_id = ? AND prompt <> ?",
            (user_id, PROMPT_REMOVED),
            setting("strikes", "id", f"prompt = '{PROMPT_REMOVED}'"),
        )
        erasure.audit_entries = await in_batches(
            self._db,
            f"SELECT id FROM audit_log WHERE target_id = ? AND detail <> '{PROMPT_REMOVED}'"
            f" AND {PROMPT_ACTIONS_SQL}",
            (user_id,),
            setting("audit_log", "id", f"detail = '{PROMPT_REMOVED}'"),
        )
        prompt = json_text(self._db.backend, "request", "params", "prompt")
        erasure.approvals = await in_batches(
            self._db,
            f"SELECT id FROM approvals WHERE user_id = ? AND state <> 'pending' AND {prompt} <> ''",
            (user_id,),
            blank_approval_prompts,
        )
        erasure.favourites = await in_batches(
            self._db,
            "SELECT job_id FROM favourites WHERE user_id = ?",
            (user_id,),
            _deleting_favourites_of(user_id),
        )
        erasure.unfinished = int(
            await self._db.fetch_value(
                "SELECT count(*) FROM jobs WHERE user_id = ? AND closed = 0", (user_id,)
            )
        ) + int(
            await self._db.fetch_value(
                "SELECT count(*) FROM approvals WHERE user_id = ? AND state = 'pending'",
                (user_id,),
            )
        )
        entry = AuditEntry(
            at=now,
            guild_id=DIRECT_MESSAGES,  # bot-wide: no one server's moderators see it
            actor_id=user_id,
            action=ERASURE_ACTION,
            target_id=user_id,
            detail=_counts(erasure),
        )
        await self._db.run(lambda tx: AuditLog.write(tx, entry))
        log.info("member %s erased their data: %s", user_id, entry.detail)
        return erasure

    async def _count_and_delete(
        self, select: str, params: tuple[Any, ...], table: str, key: str
    ) -> int:
        images = 0

        async def delete(tx: Tx, keys: list[Any]) -> int:
            nonlocal images
            images += await deleting(table, key)(tx, keys)
            return len(keys)

        await in_batches(self._db, select, params, delete)
        return images


def _counts(erasure: Erasure) -> str:
    """The audit entry's text: how much, never what."""
    parts: Iterable[tuple[str, int]] = (
        ("prompts", erasure.prompts),
        ("images", erasure.images),
        ("strike prompts", erasure.strikes),
        ("audit prompts", erasure.audit_entries),
        ("approvals", erasure.approvals),
        ("favourites", erasure.favourites),
        ("unfinished kept", erasure.unfinished),
    )
    return ", ".join(f"{name}: {count}" for name, count in parts)


def _deleting_favourites_of(user_id: int) -> Change:
    async def delete(tx: Tx, job_ids: list[Any]) -> int:
        return await tx.execute(
            f"DELETE FROM favourites WHERE user_id = ? AND job_id IN ({marks(job_ids)})",
            (user_id, *job_ids),
        )

    return delete
