"""The shared queue: which queued job goes next, on which provider key, in which slot.

The queue is the `jobs` table, so every process sharing the database serves one queue:

- Fair: round-robin by member (each member's oldest queued job first, members in the order
  their turn came), so one member's fifty jobs cannot starve another's first one.
- Capped per key, for the whole fleet: a claim takes a numbered slot `0..cap-1` of a key,
  under a partial unique index on active jobs. Claims of one provider take an advisory lock
  in turn, and a slot is a row that the next claimer's fresh snapshot sees (a count of
  uncommitted claims could not be seen); the index makes a mistake an error, not an overspend.
- Backed off together: a 429 pauses the key for every process and shrinks its limit to what
  the provider held, then the limit grows back one at a time (additive increase).
"""

from __future__ import annotations

import hashlib
import logging
import random
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass

from bot.jobs.models import Job, JobState
from bot.jobs.store import QUEUE_CHANNEL, job_from_row
from bot.providers.base import Provider
from bot.storage.base import DATABASE_NOW, INSERTION_ORDER, Backend, Reads
from bot.storage.db import Database, Tx
from bot.storage.rows import marks

log = logging.getLogger(__name__)

MAX_PAUSE = 30.0


@dataclass(frozen=True)
class ProviderKey:
    """One account at a provider: its client (sending its key) and its concurrency cap."""

    key_id: str  # stored on jobs; a name or fingerprint, never the secret itself
    provider: str
    client: Provider
    cap: int


def key_fingerprint(provider: str, secret: str) -> str:
    """A stable id for a key that reveals nothing usable about it."""
    return f"{provider}:{hashlib.sha256(secret.encode()).hexdigest()[:12]}"


@dataclass(frozen=True)
class Claim:
    job: Job  # now submitting, owned by the claimer, holding `job.slot` of `key`
    key: ProviderKey
    # The key was recovering from a 429 when claimed: its accepted submit is worth recording
    # (`SharedQueue.accepted`); otherwise there is nothing to record, and no write.
    recovering: bool = False


@dataclass(frozen=True)
class ClaimRound:
    """What one claim transaction found."""

    claims: list[Claim]
    # Seconds the claimer's lease had left, by the database's clock (None: it has none).
    lease_left: float | None = None
    # Seconds until a paused key of the provider may take work again (0: none is paused).
    pause: float = 0.0
    # Every key was full or paused: a newly queued job changes nothing until a slot frees.
    slots_full: bool = False


# Gives a claimed job's webhook secret for the key it goes to (None: no webhook), written
# with the claim, so the job's path has no write of its own for it.
SecretFor = Callable[[ProviderKey], str | None]


def _ranked_queue(backend: Backend) -> str:
    """Queued jobs of one provider (`?`) with each one's turn (a member's n-th queued job has
    turn n) and when the member was last served (their latest claim; NULL: never)."""
    order = INSERTION_ORDER[backend]
    return (
        "SELECT id, created_at, tie, ROW_NUMBER() OVER"
        " (PARTITION BY user_id ORDER BY created_at, tie) AS turn,"
        " (SELECT MAX(served.claim_seq) FROM jobs AS served"
        "  WHERE served.user_id = queued.user_id AND served.claim_seq IS NOT NULL) AS served"
        f" FROM (SELECT id, user_id, created_at, {order} AS tie FROM jobs"
        "  WHERE state = 'queued' AND provider = ?) AS queued"
    )


_SERVED = (
    "COALESCE((SELECT MAX(served.claim_seq) FROM jobs AS served"
    " WHERE served.user_id = {member} AND served.claim_seq IS NOT NULL), 0)"
)
# See SharedQueue.place_of_newest: the member's turn and when they were last served, then
# each queued member's jobs ahead of that.
_NEWEST_PLACE_SQL = (
    "WITH me AS (SELECT (SELECT COUNT(*) FROM jobs WHERE state = 'queued' AND provider = ?"
    f" AND user_id = ?) AS turn, {_SERVED.format(member='?')} AS served),"
    " members AS (SELECT user_id, COUNT(*) AS k,"
    f" {_SERVED.format(member='queued.user_id')} AS served"
    " FROM jobs AS queued WHERE state = 'queued' AND provider = ? GROUP BY user_id)"
    " SELECT SUM(CASE WHEN members.k >= me.turn AND members.served <= me.served THEN me.turn"
    " WHEN members.k >= me.turn THEN me.turn - 1 ELSE members.k END)"
    " FROM members, me WHERE me.turn > 0"
)

# Jobs ranked per claim: the first that no other transaction holds is taken.
NEXT_CANDIDATES = 4


def _fair_order(table: str) -> str:
    """Round-robin: everyone's first turn before anyone's second; within a turn, the member
    served longest ago (or never) first; then first come, first served."""
    return f"{table}.turn, COALESCE({table}.served, 0), {table}.created_at, {table}.tie"


class SharedQueue:
    """The queue and the keys' slots and back-off, as every process sharing the store sees
    them."""

    def __init__(
        self, db: Database, keys: Iterable[ProviderKey], clock: Callable[[], float]
    ) -> None:
        self._db = db
        self._clock = clock
        self._keys: dict[str, list[ProviderKey]] = {}
        self._by_id: dict[str, ProviderKey] = {}
        for key in keys:
            self._keys.setdefault(key.provider, []).append(key)
            self._by_id[key.key_id] = key
        self._now = DATABASE_NOW[db.backend]
        ranked = _ranked_queue(db.backend)
        # The next jobs by turn. Ranked on their own, then locked by id: joined back to
        # `jobs` in one statement, PostgreSQL may re-rank the queue for every queued row
        # (seen at 30 ms for 200 queued jobs on fresh statistics).
        self._next_sql = (
            f"WITH ranked AS ({ranked}) SELECT id FROM ranked"
            f" ORDER BY {_fair_order('ranked')} LIMIT {NEXT_CANDIDATES}"
        )
        self._lock_rows = db.backend == "postgres"
        self._position_sql = (
            f"WITH ranked AS ({ranked}) SELECT place FROM (SELECT id, ROW_NUMBER() OVER"
            f" (ORDER BY {_fair_order('ranked')}) AS place FROM ranked) AS placed WHERE id = ?"
        )

    @property
    def providers(self) -> list[str]:
        return list(self._keys)

    def keys(self, provider: str) -> list[ProviderKey]:
        return list(self._keys.get(provider, ()))

    def key_of(self, job: Job) -> ProviderKey | None:
        """The key a job was submitted with; a job from before keys were recorded, or whose
        key was removed from the settings, uses its provider's first key."""
        if job.provider_key is not None and job.provider_key in self._by_id:
            return self._by_id[job.provider_key]
        keys = self._keys.get(job.provider)
        return keys[0] if keys else None

    def cap(self, provider: str) -> int:
        return sum(key.cap for key in self._keys.get(provider, ()))

    async def prepare(self) -> None:
        """Every configured key has its back-off row."""
        await self._db.run(self._insert_key_rows)

    async def _insert_key_rows(self, tx: Tx) -> None:
        await tx.execute_many(
            "INSERT INTO provider_keys (key_id) VALUES (?) ON CONFLICT (key_id) DO NOTHING",
            [(key_id,) for key_id in self._by_id],
        )

    # ----------------------------------------------------------------- claiming
    async def claim(self, provider: str, owner: str, *, lease_margin: float) -> Claim | None:
        """Take the next queued job of `provider` and a free slot of one of its keys, for
        `owner`, whose lease must have `lease_margin` seconds left; None when no job is
        queued, every key is full or paused, or the lease is too short to start work."""
        claims = await self.claim_some(provider, owner, lease_margin=lease_margin, most=1)
        return claims[0] if claims else None

    async def claim_some(
        self, provider: str, owner: str, *, lease_margin: float, most: int
    ) -> list[Claim]:
        """`claim`, up to `most` jobs in one transaction: when a wave of tasks ends at once,
        their successors are claimed together (claims of a provider take turns, so one
        transaction per job would put a commit per job on every job's path)."""
        claimed = await self.claim_round(provider, owner, lease_margin=lease_margin, most=most)
        return claimed.claims

    async def claim_round(
        self,
        provider: str,
        owner: str,
        *,
        lease_margin: float,
        most: int,
        secret_for: SecretFor | None = None,
    ) -> ClaimRound:
        """`claim_some`, with what the transaction saw of the lease, the keys' pauses and
        slots; `secret_for` gives each claimed job's webhook secret, written with the claim."""
        keys = self._keys.get(provider)
        if not keys:
            return ClaimRound([])

        return await self._db.run(
            lambda tx: self._claim(tx, provider, keys, owner, lease_margin, most, secret_for)
        )

    async def release_and_claim(
        self,
        job_ids: Collection[str],
        provider: str,
        owner: str,
        *,
        lease_margin: float,
        most: int,
        secret_for: SecretFor | None = None,
    ) -> ClaimRound:
        """`release` the slots of `job_ids` (tasks of `provider` that ended) and, in the same
        transaction, claim up to `most` queued jobs into the free slots (`claim_round`;
        `most=0`: release only). One commit hands finished tasks' slots to the next jobs,
        instead of one to free each and one to claim; a crash between the two cannot happen
        (the slots stay the finished jobs', the next jobs stay queued). Other processes are
        told of freed slots only if some stay free."""
        keys = self._keys.get(provider)

        async def body(tx: Tx) -> ClaimRound:
            await tx.lock(f"slots:{provider}")
            freed = 0
            if job_ids:
                placeholders = marks(job_ids)
                freed = await tx.execute(
                    f"UPDATE jobs SET slot = NULL WHERE id IN ({placeholders}) AND owner = ?"
                    " AND slot IS NOT NULL",
                    (*job_ids, owner),
                )
            claimed = ClaimRound([])
            if keys and most > 0:
                claimed = await self._claim(
                    tx, provider, keys, owner, lease_margin, most, secret_for, locked=True
                )
            if freed > len(claimed.claims):
                await tx.notify(QUEUE_CHANNEL, provider)
            return claimed

        return await self._db.run(body)

    async def _claim(
        self,
        tx: Tx,
        provider: str,
        keys: Sequence[ProviderKey],
        owner: str,
        margin: float,
        most: int,
        secret_for: SecretFor | None = None,
        *,
        locked: bool = False,
    ) -> ClaimRound:
        """The claim itself, under the provider's lock (`locked`: the caller holds it)."""
        if not locked:
            await tx.lock(f"slots:{provider}")
        left = await tx.fetch_value(
            f"SELECT lease_expires_at - {self._now} FROM processes WHERE id = ?", (owner,)
        )
        lease_left = None if left is None else float(left)
        if lease_left is None or lease_left <= margin:
            return ClaimRound([], lease_left)
        used: dict[str, set[int]] = {key.key_id: set() for key in keys}
        for row in await tx.fetch_all(
            "SELECT provider_key, slot FROM jobs WHERE provider = ? AND slot IS NOT NULL",
            (provider,),
        ):
            used.setdefault(row["provider_key"], set()).add(int(row["slot"]))
        limits, recovering, pause = await self._key_states(tx, keys)
        claims: list[Claim] = []
        slots_full = False
        while len(claims) < most:
            # The key with the most room first, so the load spreads over the accounts.
            candidates = sorted(
                (key for key in keys if limits[key.key_id] > len(used[key.key_id])),
                key=lambda key: len(used[key.key_id]) - limits[key.key_id],
            )
            if not candidates:
                slots_full = True
                break
            job_id = await self._next_job(tx, provider)
            if job_id is None:
                break
            key = candidates[0]
            slot = next(n for n in range(key.cap) if n not in used[key.key_id])
            secret = None if secret_for is None else secret_for(key)
            claimed = await tx.fetch_one(
                "UPDATE jobs SET state = ?, owner = ?, provider_key = ?, slot = ?,"
                " webhook_secret = ?, updated_at = ?,"
                " claim_seq = (SELECT COALESCE(MAX(claim_seq), 0) + 1 FROM jobs)"
                " WHERE id = ? AND state = 'queued' RETURNING *",
                (JobState.SUBMITTING.value, owner, key.key_id, slot, secret, self._clock(), job_id),
            )
            if claimed is None:
                break
            used[key.key_id].add(slot)
            claims.append(Claim(job_from_row(claimed), key, key.key_id in recovering))
        return ClaimRound(claims, lease_left, pause if not claims else 0.0, slots_full)

    async def _next_job(self, tx: Tx, provider: str) -> str | None:
        """The first queued job by turn that no other transaction holds (a cancel holding
        one is skipped, not waited for)."""
        candidates = [row["id"] for row in await tx.fetch_all(self._next_sql, (provider,))]
        if not candidates or not self._lock_rows:
            return candidates[0] if candidates else None
        placeholders = marks(candidates)
        free = {
            row["id"]
            for row in await tx.fetch_all(
                f"SELECT id FROM jobs WHERE id IN ({placeholders}) AND state = 'queued'"
                " FOR UPDATE SKIP LOCKED",
                candidates,
            )
        }
        return next((job_id for job_id in candidates if job_id in free), None)

    async def _key_states(
        self, tx: Tx, keys: Sequence[ProviderKey]
    ) -> tuple[dict[str, int], set[str], float]:
        """How many tasks each key may hold now (0 while paused, else its learned limit),
        which keys are recovering from a 429, and the shortest pause left (0: none)."""
        placeholders = marks(keys)
        rows = await tx.fetch_all(
            f"SELECT key_id, paused_until - {self._now} AS pause, accepted_limit, busy_streak"
            f" FROM provider_keys WHERE key_id IN ({placeholders})",
            [key.key_id for key in keys],
        )
        state = {row["key_id"]: row for row in rows}
        limits = {}
        recovering = set()
        pauses = []
        for key in keys:
            row = state.get(key.key_id)
            if row is not None and (row["busy_streak"] or row["accepted_limit"] is not None):
                recovering.add(key.key_id)
            if row is not None and float(row["pause"]) > 0:
                limits[key.key_id] = 0
                pauses.append(float(row["pause"]))
            elif row is not None and row["accepted_limit"] is not None:
                limits[key.key_id] = min(key.cap, int(row["accepted_limit"]))
            else:
                limits[key.key_id] = key.cap
        return limits, recovering, min(pauses, default=0.0)

    async def pause_left(self, provider: str) -> float:
        """Seconds until a paused key of `provider` may take work again (0: none paused)."""
        keys = self._keys.get(provider, ())
        if not keys:
            return 0.0
        placeholders = marks(keys)
        left = await self._db.fetch_value(
            f"SELECT MIN(paused_until - {self._now}) FROM provider_keys"
            f" WHERE key_id IN ({placeholders}) AND paused_until > {self._now}",
            [key.key_id for key in keys],
        )
        return 0.0 if left is None else max(0.0, float(left))

    async def release(self, job_id: str, owner: str) -> None:
        """The job's task is no longer active at the provider: its slot is free."""

        async def free(tx: Tx) -> None:
            row = await tx.fetch_one(
                "UPDATE jobs SET slot = NULL WHERE id = ? AND owner = ? AND slot IS NOT NULL"
                " RETURNING provider",
                (job_id, owner),
            )
            if row is not None:
                await tx.notify(QUEUE_CHANNEL, row["provider"])

        await self._db.run(free)

    # ----------------------------------------------------------------- back-off
    async def busy(self, key: ProviderKey, retry_after: float | None) -> float:
        """The provider answered 429 to a submit that holds a slot of `key`: shrink the key's
        limit to what it holds now and pause it for every process (jittered, growing if 429s
        persist). Returns the pause in seconds."""

        async def back_off(tx: Tx) -> float:
            await tx.lock(f"slots:{key.provider}")
            row = await tx.fetch_one(
                f"SELECT paused_until - {self._now} AS pause, busy_streak"
                " FROM provider_keys WHERE key_id = ?",
                (key.key_id,),
            )
            pause_left = 0.0 if row is None else float(row["pause"])
            streak = 0 if row is None else int(row["busy_streak"])
            if pause_left <= 0:
                streak += 1  # a new episode, not another answer from the same burst
            active = int(
                await tx.fetch_value(
                    "SELECT COUNT(*) FROM jobs WHERE provider_key = ? AND slot IS NOT NULL",
                    (key.key_id,),
                )
            )
            backoff = min(MAX_PAUSE, 0.25 * 2 ** min(streak - 1, 7))
            pause = retry_after if retry_after is not None else backoff * random.uniform(0.75, 1.25)
            pause = max(pause, pause_left)
            await tx.execute(
                "INSERT INTO provider_keys (key_id) VALUES (?) ON CONFLICT (key_id) DO NOTHING",
                (key.key_id,),
            )
            await tx.execute(
                f"UPDATE provider_keys SET paused_until = {self._now} + ?, busy_streak = ?,"
                " accepted_limit = ?, accepted_since_raise = 0 WHERE key_id = ?",
                (pause, streak, max(1, active - 1), key.key_id),
            )
            return pause

        pause = await self._db.run(back_off)
        log.info("%s is at capacity; pausing it %.2fs", key.key_id, pause)
        return pause

    async def accepted(self, key: ProviderKey) -> None:
        """A submit on `key` was accepted: the 429 episode is over; after as many accepted
        submits as the limit, the limit grows by one, back up to the cap."""

        async def grow(tx: Tx) -> None:
            row = await tx.fetch_one(
                "SELECT busy_streak, accepted_limit, accepted_since_raise FROM provider_keys"
                " WHERE key_id = ?",
                (key.key_id,),
            )
            if row is None or (row["busy_streak"] == 0 and row["accepted_limit"] is None):
                return
            limit = row["accepted_limit"]
            since = int(row["accepted_since_raise"]) + 1
            if limit is not None and since >= int(limit):
                limit, since = int(limit) + 1, 0
                if limit >= key.cap:
                    limit = None  # back to the configured cap
            await tx.execute(
                "UPDATE provider_keys SET busy_streak = 0, accepted_limit = ?,"
                " accepted_since_raise = ? WHERE key_id = ?",
                (limit, since, key.key_id),
            )

        await self._db.run(grow)

    # ----------------------------------------------------------------- reading
    async def position(self, job: Job) -> int | None:
        """1-based place in line, or None when the job is not queued."""
        return await self.position_in(self._db, job)

    async def position_in(self, reads: Reads, job: Job) -> int | None:
        place = await reads.fetch_value(self._position_sql, (job.provider, job.id))
        return None if place is None else int(place)

    async def place_of_newest(self, reads: Reads, job: Job) -> int | None:
        """`position_in` for a job its member has just queued (the accept's own transaction).

        Ranking the whole queue for every accept made a burst quadratic: at 3,000 queued
        jobs it took a third of the bot's CPU, inside the write transaction every other
        accept waits for. A member's newest job has turn t (their queued count) and sorts
        after every job created before it, so each member with k queued jobs has min(k, t-1)
        of them ahead, plus their turn-t job when they were served no later: one pass over
        the queue's members, counted per member, never sorted."""
        place = await reads.fetch_value(
            _NEWEST_PLACE_SQL, (job.provider, job.user_id, job.user_id, job.provider)
        )
        return int(place) if place else None

    async def counts(self) -> Mapping[str, tuple[int, int]]:
        """(queued, active) per provider, for the metrics. Two queries, each on its partial
        index: one over both conditions would read every job the bot ever made."""
        queued = await self._db.fetch_all(
            "SELECT provider, COUNT(*) AS n FROM jobs WHERE state = 'queued' GROUP BY provider"
        )
        active = await self._db.fetch_all(
            "SELECT provider, COUNT(*) AS n FROM jobs WHERE slot IS NOT NULL GROUP BY provider"
        )
        counts = {row["provider"]: (int(row["n"]), 0) for row in queued}
        for row in active:
            counts[row["provider"]] = (counts.get(row["provider"], (0, 0))[0], int(row["n"]))
        return counts
