-- Several processes sharing one database (PostgreSQL), and the same rules for one (SQLite).
-- Each running bot process holds a lease, renewed by its heartbeat in database time; the
-- jobs it has claimed name it as their owner. A job whose owner's lease has run out is
-- adopted by another process, and every owned change says "AND owner = me".
CREATE TABLE processes (
    id               TEXT PRIMARY KEY,
    started_at       REAL NOT NULL,
    lease_expires_at REAL NOT NULL,
    description      TEXT NOT NULL DEFAULT ''
);

ALTER TABLE jobs ADD COLUMN owner TEXT;
-- The provider key that submitted the job (a fingerprint, never the key): it keeps it.
ALTER TABLE jobs ADD COLUMN provider_key TEXT;
-- A numbered slot 0..cap-1 of that key, held while the task is active at the provider. The
-- unique index, not a count of rows, is what stops two processes taking the same place.
ALTER TABLE jobs ADD COLUMN slot INTEGER;
-- The order of claims (1, 2, 3, ...): round-robin serves the member served longest ago.
ALTER TABLE jobs ADD COLUMN claim_seq INTEGER;
-- A verified webhook body received by a process that does not own the job, for its owner.
ALTER TABLE jobs ADD COLUMN webhook_payload TEXT;

CREATE UNIQUE INDEX jobs_provider_slot ON jobs (provider_key, slot) WHERE slot IS NOT NULL;
CREATE INDEX jobs_queued ON jobs (provider, created_at) WHERE state = 'queued';
CREATE INDEX jobs_by_owner ON jobs (owner) WHERE closed = 0;
CREATE INDEX jobs_claim_seq ON jobs (claim_seq) WHERE claim_seq IS NOT NULL;
CREATE INDEX jobs_member_claims ON jobs (user_id, claim_seq) WHERE claim_seq IS NOT NULL;

-- The shared back-off of each provider key after a 429: every process pauses together.
CREATE TABLE provider_keys (
    key_id               TEXT PRIMARY KEY,
    paused_until         REAL NOT NULL DEFAULT 0,
    busy_streak          INTEGER NOT NULL DEFAULT 0,
    accepted_limit       INTEGER,
    accepted_since_raise INTEGER NOT NULL DEFAULT 0
);

-- Which process holds which gateway shard: a shard is never connected from two at once.
CREATE TABLE shard_leases (
    shard_id         INTEGER PRIMARY KEY,
    shard_count      INTEGER NOT NULL,
    owner            TEXT NOT NULL,
    lease_expires_at REAL NOT NULL
) WITHOUT ROWID;  -- a shard id is a Discord number, never one SQLite should make up
