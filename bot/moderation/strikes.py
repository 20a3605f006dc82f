"""Banned terms per server, strikes for prompts that hit them, and blocks.

A prompt that hits a banned term is refused with a neutral message before anything is
reserved or sent, and counts as a strike. Strikes escalate at the server's thresholds:
a warning, then a temporary block, then a block until a moderator lifts it. Moderators
block and unblock members too, within `check_may_block`. `Moderation` keeps each server's
terms, strikes and blocks (SQLite, with their audit entries in the same transaction).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from bot.errors import InvalidPattern, InvalidRequest
from bot.invalidation import Cache, announce
from bot.moderation.patterns import (
    DEFAULT_TERMS_SIZE_BUDGET,
    over_budget_text,
    too_large_text,
    validate_pattern,
)
from bot.moderation.terms import DEFAULT_TERMS, BannedTerm, TermHit, TermMatcher
from bot.servers.audit import BOT_ACTOR, AuditEntry, AuditLog
from bot.servers.settings import ServerSettings
from bot.storage.db import Database, Tx
from bot.storage.rows import from_row
from bot.text import code_excerpt, plural

REFUSED_TEXT = "This prompt can't be used on this server. Nothing was charged."
WARNING_TEXT = (
    "This is a warning: more refused prompts will block you from making images here for a while."
)
PROMPT_EXCERPT = 300  # what /mod why shows of a refused prompt
# The "term" of a strike the image service's own safety filter gave (see provider_moderation).
PROVIDER_MODERATION_TERM = "the image service's safety filter"
# A server's own terms, however small. What checking them costs is bounded by their total size
# (the size budget, MAX_BANNED_TERMS_SIZE_PER_SERVER; see TermMatcher).
MAX_SERVER_TERMS = 500
# A server's checks run one at a time. One takes well under a second (the size budget),
# and Discord wants an answer within 3 s, so a check that can't start this soon is
# not queued for longer: the member is asked to try again (no strike, nothing charged).
CHECK_QUEUE_SECONDS = 1.5
BUSY_TEXT = (
    "This server is busy checking other prompts against its banned terms. Nothing was "
    "charged; try again in a moment."
)

log = logging.getLogger(__name__)


class PromptRefused(InvalidRequest):
    """A banned term: the message is neutral and says what happens to the member next."""


class Blocked(InvalidRequest):
    """A blocked member asked for an image: the message says until when."""

    def __init__(self, block: Block) -> None:
        super().__init__(self.text(block))
        self.block = block

    @staticmethod
    def text(block: Block) -> str:
        if block.until is None:
            return "You are blocked from making images on this server."
        return f"You are blocked from making images on this server until <t:{int(block.until)}:f>."


@dataclass(frozen=True)
class Block:
    guild_id: int
    user_id: int
    until: float | None  # None: until a moderator unblocks
    reason: str
    blocked_by: int
    at: float

    def active(self, now: float) -> bool:
        return self.until is None or self.until > now


@dataclass(frozen=True)
class Strike:
    at: float
    term: str
    prompt: str
    cleared: bool


def check_may_block(
    actor_id: int, target_id: int, *, target_is_bot: bool, bot_user_id: int | None
) -> None:
    """Moderators can't block themselves, Fluxcord or other bots (bots can't make images
    here, so there is nothing to block). Raises InvalidRequest."""
    if target_id == actor_id:
        raise InvalidRequest("You can't block yourself.")
    if bot_user_id is not None and target_id == bot_user_id:
        raise InvalidRequest("I can't block myself: I'm the one making the images.")
    if target_is_bot:
        raise InvalidRequest("Bots can't make images here, so there's nothing to block.")


class Moderation:
    def __init__(
        self,
        db: Database,
        audit: AuditLog,
        *,
        settings: Callable[[int], ServerSettings],
        clock: Callable[[], float] = time.time,
        terms_size_budget: int = DEFAULT_TERMS_SIZE_BUDGET,
    ) -> None:
        self._db = db
        self._audit = audit
        self._settings = settings
        self._clock = clock
        self._terms_size_budget = terms_size_budget
        self._terms: dict[int, list[tuple[int, BannedTerm]]] = {}
        self._terms_version = 0  # a matcher built from older terms is not kept
        self._matchers: dict[int, TermMatcher] = {}
        # One check at a time per server: its terms keep at most one worker thread busy.
        self._checking: dict[int, asyncio.Lock] = {}
        self._blocks: dict[tuple[int, int], Block] = {}
        self._skipped_terms: set[int] = set()  # warned about once, not on every reload
        self._over_budget_terms: set[int] = set()  # the same

    async def load(self) -> None:
        """Read terms and blocks; also how other processes' changes arrive
        (bot/invalidation.py), so the new state replaces the old in one step."""
        term_rows = await self._db.fetch_all("SELECT * FROM banned_terms ORDER BY id")
        block_rows = await self._db.fetch_all("SELECT * FROM blocks")
        terms: dict[int, list[tuple[int, BannedTerm]]] = {}
        for row in term_rows:
            term = BannedTerm(row["pattern"], bool(row["is_regex"]), "server")
            terms.setdefault(row["guild_id"], []).append((row["id"], term))
            try:
                validate_pattern(term.pattern, is_regex=term.is_regex)
            except InvalidPattern as exc:
                # Stored before the rules tightened (say, a backreference, which RE2 can't
                # run). It stays listed so a moderator can remove it, but is not in force:
                # reading it as a literal would refuse nothing anyone types.
                if row["id"] not in self._skipped_terms:
                    self._skipped_terms.add(row["id"])
                    log.warning(
                        "Banned term %d of server %d is skipped, not matched: %s (pattern %r)",
                        row["id"],
                        row["guild_id"],
                        exc,
                        term.pattern,
                    )
        self._terms = terms
        self._terms_version += 1
        self._matchers = {}
        self._blocks = {
            (row["guild_id"], row["user_id"]): from_row(Block, row) for row in block_rows
        }

    # ----------------------------------------------------------------- terms
    def server_terms(self, guild_id: int) -> list[BannedTerm]:
        return [term for _, term in self._terms.get(guild_id, [])]

    async def matcher(self, guild_id: int) -> TermMatcher:
        """The server's terms (and the built-in ones) compiled, kept until they change.
        Compiling hundreds of terms is CPU work, so it runs off the event loop."""
        matcher = self._matchers.get(guild_id)
        if matcher is not None:
            return matcher
        version = self._terms_version
        terms = list(self._terms.get(guild_id, []))
        matcher = await asyncio.to_thread(
            TermMatcher,
            (*DEFAULT_TERMS, *(term for _, term in terms)),
            skip_unusable=True,
            size_budget=self._terms_size_budget,
        )
        if version == self._terms_version:
            self._matchers[guild_id] = matcher
        self._warn_over_budget(guild_id, terms, matcher.over_budget)
        return matcher

    def _warn_over_budget(
        self, guild_id: int, terms: list[tuple[int, BannedTerm]], over: list[BannedTerm]
    ) -> None:
        # Stored when the budget was larger (or before there was one). The oldest terms that
        # fit stay in force; the moderator is told when adding a term. One line per server,
        # once for each term, not on every reload.
        ids = {id(term): term_id for term_id, term in terms}
        new = [ids[id(term)] for term in over if ids[id(term)] not in self._over_budget_terms]
        if new:
            self._over_budget_terms.update(new)
            log.warning(
                "%s of server %d not in force: with the older ones they are over the server's"
                " size budget of %d (ids %s)",
                plural(len(new), "banned term"),
                guild_id,
                self._terms_size_budget,
                ", ".join(map(str, new[:10])) + (", …" if len(new) > 10 else ""),
            )

    async def terms_not_in_force(self, guild_id: int) -> list[BannedTerm]:
        """The server's terms left out because they don't fit its size budget."""
        return list((await self.matcher(guild_id)).over_budget)

    async def add_term(self, guild_id: int, actor_id: int, pattern: str, *, is_regex: bool) -> str:
        try:
            cleaned = validate_pattern(pattern, is_regex=is_regex)
        except InvalidPattern as exc:
            # InvalidPattern is not an InvalidRequest: the moderator would only see "something
            # went wrong" instead of what is wrong with the pattern.
            raise InvalidRequest(str(exc)) from exc
        if any(
            t.pattern == cleaned and t.is_regex == is_regex for t in self.server_terms(guild_id)
        ):
            raise InvalidRequest("That term is already on this server's list.")
        if len(self.server_terms(guild_id)) >= MAX_SERVER_TERMS:
            raise InvalidRequest(
                f"This server already has {MAX_SERVER_TERMS} banned terms, the most it can "
                "have. Remove one with /settings terms-remove first."
            )
        kind = "regular expression" if is_regex else "term"
        matcher = await self.matcher(guild_id)
        if matcher.over_budget:
            raise InvalidRequest(over_budget_text(len(matcher.over_budget)))
        new = BannedTerm(cleaned, is_regex, "server")
        size = await asyncio.to_thread(matcher.size_with, new)  # compiles them all
        if size > self._terms_size_budget:
            raise InvalidRequest(too_large_text(kind, size, matcher.size, self._terms_size_budget))
        entry = self._audit.entry(guild_id, actor_id, "banned term added", f"{kind} `{cleaned}`")

        async def write(tx: Tx) -> int:

            await announce(tx, Cache.MODERATION)
            term_id = await tx.fetch_value(
                "INSERT INTO banned_terms (guild_id, pattern, is_regex, added_by, added_at)"
                " VALUES (?,?,?,?,?) RETURNING id",
                (guild_id, cleaned, int(is_regex), actor_id, entry.at),
            )
            await self._audit.write(tx, entry)
            return int(term_id)

        term_id = await self._db.run(write)
        self._terms.setdefault(guild_id, []).append(
            (term_id, BannedTerm(cleaned, is_regex, "server"))
        )
        self._terms_version += 1
        self._matchers.pop(guild_id, None)
        await self._audit.publish(entry)
        return cleaned

    async def remove_term(self, guild_id: int, actor_id: int, pattern: str) -> None:
        found = [(i, t) for i, t in self._terms.get(guild_id, []) if t.pattern == pattern.strip()]
        if not found:
            raise InvalidRequest(
                "That term is not on this server's list (the built-in list can't be changed)."
            )
        term_id, term = found[0]
        entry = self._audit.entry(guild_id, actor_id, "banned term removed", f"`{term.pattern}`")

        async def write(tx: Tx) -> None:

            await announce(tx, Cache.MODERATION)
            await tx.execute("DELETE FROM banned_terms WHERE id = ?", (term_id,))
            await self._audit.write(tx, entry)

        await self._db.run(write)
        self._terms[guild_id] = [(i, t) for i, t in self._terms[guild_id] if i != term_id]
        self._terms_version += 1
        self._matchers.pop(guild_id, None)
        await self._audit.publish(entry)

    # ----------------------------------------------------------------- prompts
    def block_of(self, guild_id: int, user_id: int) -> Block | None:
        block = self._blocks.get((guild_id, user_id))
        return block if block is not None and block.active(self._clock()) else None

    def check_blocked(self, guild_id: int, user_id: int) -> None:
        block = self.block_of(guild_id, user_id)
        if block is not None:
            raise Blocked(block)

    async def first_hit(self, guild_id: int, prompt: str) -> TermHit | None:
        """The server's first banned term in `prompt`, found off the event loop.

        The work is bounded by construction (the prompt's length times the server's size
        budget, see TermMatcher), so it is never abandoned half done; and a server's checks
        run one at a time, so whatever its terms and its members' prompts, they keep at most
        one worker thread busy and other servers never wait behind them. A check that would
        wait longer than CHECK_QUEUE_SECONDS for its turn is refused (InvalidRequest,
        BUSY_TEXT; no strike)."""
        turn = self._checking.setdefault(guild_id, asyncio.Lock())
        try:
            # Only waiting is given up: a check that started always finishes.
            await asyncio.wait_for(turn.acquire(), CHECK_QUEUE_SECONDS)
        except TimeoutError:
            raise InvalidRequest(BUSY_TEXT) from None
        try:
            matcher = await self.matcher(guild_id)
            return await asyncio.to_thread(matcher.first_hit, prompt)
        finally:
            turn.release()

    async def check_prompt(self, guild_id: int, user_id: int, prompt: str) -> None:
        """Refuse a prompt that hits a banned term, counting a strike (raises PromptRefused)."""
        hit = await self.first_hit(guild_id, prompt)
        if hit is None:
            return
        settings = self._settings(guild_id)
        now = self._clock()
        label = (
            hit.term.pattern if hit.term.source == "server" else f"{hit.term.pattern} (built-in)"
        )
        entries = [
            self._audit.entry(
                guild_id,
                user_id,
                "prompt refused",
                f"hit banned term `{label}` in: {_quote(prompt)}",
                target_id=user_id,
            )
        ]

        count, block = await self._strike(guild_id, user_id, now, label, prompt, entries)
        if block is not None:
            raise PromptRefused(f"{REFUSED_TEXT} {Blocked.text(block)}")
        if count >= settings.strike_warn:
            raise PromptRefused(f"{REFUSED_TEXT} {WARNING_TEXT}")
        raise PromptRefused(REFUSED_TEXT)

    async def provider_moderation(self, guild_id: int, user_id: int, prompt: str) -> Block | None:
        """The image service's safety filter refused a request: a strike like a banned term
        (the provider billed it, and a refund alone would make retrying free). Returns the
        block it led to, if any."""
        _, block = await self._strike(
            guild_id, user_id, self._clock(), PROVIDER_MODERATION_TERM, prompt, []
        )
        return block

    async def _strike(
        self,
        guild_id: int,
        user_id: int,
        now: float,
        label: str,
        prompt: str,
        entries: list[AuditEntry],
    ) -> tuple[int, Block | None]:
        """Record a strike, escalating at the server's thresholds; audits `entries` with it.
        Returns the member's active strikes and the block it led to, if any."""
        settings = self._settings(guild_id)

        async def write(tx: Tx) -> tuple[int, Block | None]:

            await announce(tx, Cache.MODERATION)
            await tx.execute(
                "INSERT INTO strikes (guild_id, user_id, at, term, prompt) VALUES (?,?,?,?,?)",
                (guild_id, user_id, now, label, prompt[:PROMPT_EXCERPT]),
            )
            count = await tx.fetch_value(
                "SELECT count(*) FROM strikes WHERE guild_id = ? AND user_id = ? AND cleared = 0",
                (guild_id, user_id),
            )
            block: Block | None = None
            reason = f"{count} refused prompts"
            if count >= settings.strike_block:
                block = Block(guild_id, user_id, None, reason, BOT_ACTOR, now)
            elif count >= settings.strike_temp_block:
                until = now + settings.temp_block_hours * 3600
                block = Block(guild_id, user_id, until, reason, BOT_ACTOR, now)
            if block is not None:
                await _write_block(tx, block)
                entries.append(_block_entry(self._audit, block))
            for entry in entries:
                await self._audit.write(tx, entry)
            return count, block

        count, block = await self._db.run(write)
        if block is not None:
            self._blocks[(guild_id, user_id)] = block
        for entry in entries:
            await self._audit.publish(entry)
        return count, block

    # ----------------------------------------------------------------- moderators
    async def block(
        self, guild_id: int, actor_id: int, user_id: int, *, hours: float | None, reason: str
    ) -> Block:
        if hours is not None and not 0 < hours <= 24 * 365:
            raise InvalidRequest(
                "A block lasts between a few minutes and a year (or leave hours empty)."
            )
        now = self._clock()
        block = Block(
            guild_id,
            user_id,
            None if hours is None else now + hours * 3600,
            reason.strip()[:200] or "no reason given",
            actor_id,
            now,
        )
        entry = _block_entry(self._audit, block)

        async def write(tx: Tx) -> None:

            await announce(tx, Cache.MODERATION)
            await _write_block(tx, block)
            await self._audit.write(tx, entry)

        await self._db.run(write)
        self._blocks[(guild_id, user_id)] = block
        await self._audit.publish(entry)
        return block

    async def unblock(self, guild_id: int, actor_id: int, user_id: int) -> bool:
        """Lift a block and clear the member's strikes (they start again from zero)."""
        entry = self._audit.entry(
            guild_id, actor_id, "unblocked", f"<@{user_id}>; strikes cleared", target_id=user_id
        )

        async def write(tx: Tx) -> bool:

            await announce(tx, Cache.MODERATION)
            removed = await tx.execute(
                "DELETE FROM blocks WHERE guild_id = ? AND user_id = ?", (guild_id, user_id)
            )
            cleared = await tx.execute(
                "UPDATE strikes SET cleared = 1 WHERE guild_id = ? AND user_id = ? AND cleared = 0",
                (guild_id, user_id),
            )
            if removed or cleared:
                await self._audit.write(tx, entry)
            return bool(removed or cleared)

        changed = await self._db.run(write)
        self._blocks.pop((guild_id, user_id), None)
        if changed:
            await self._audit.publish(entry)
        return changed

    async def strikes(self, guild_id: int, user_id: int, limit: int = 10) -> list[Strike]:
        rows = await self._db.fetch_all(
            "SELECT * FROM strikes WHERE guild_id = ? AND user_id = ? ORDER BY at DESC, id DESC"
            " LIMIT ?",
            (guild_id, user_id, limit),
        )
        return [from_row(Strike, r, cleared=bool) for r in rows]

    async def active_strike_count(self, guild_id: int, user_id: int) -> int:
        value = await self._db.fetch_value(
            "SELECT count(*) FROM strikes WHERE guild_id = ? AND user_id = ? AND cleared = 0",
            (guild_id, user_id),
        )
        return int(value or 0)


async def _write_block(tx: Tx, block: Block) -> None:
    await tx.execute(
        "INSERT INTO blocks (guild_id, user_id, until, reason, blocked_by, at)"
        " VALUES (?,?,?,?,?,?) ON CONFLICT (guild_id, user_id) DO UPDATE SET"
        " until = excluded.until, reason = excluded.reason, blocked_by = excluded.blocked_by,"
        " at = excluded.at",
        (block.guild_id, block.user_id, block.until, block.reason, block.blocked_by, block.at),
    )


def _block_entry(audit: AuditLog, block: Block) -> AuditEntry:
    length = "until unblocked" if block.until is None else f"until <t:{int(block.until)}:f>"
    return audit.entry(
        block.guild_id,
        block.blocked_by,
        "blocked",
        f"<@{block.user_id}> {length}: {block.reason}",
        target_id=block.user_id,
    )


def _quote(prompt: str) -> str:
    return code_excerpt(prompt, PROMPT_EXCERPT)
