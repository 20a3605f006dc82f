-- Jobs: one row per accepted generation request, moved through explicit states.
-- Times are Unix seconds (REAL). `closed` = the requester has been shown the outcome.
CREATE TABLE jobs (
    id                TEXT PRIMARY KEY,
    created_at        REAL NOT NULL,
    updated_at        REAL NOT NULL,
    guild_id          INTEGER,
    channel_id        INTEGER NOT NULL,
    user_id           INTEGER NOT NULL,
    variant           TEXT NOT NULL,
    provider          TEXT NOT NULL,
    prompt            TEXT NOT NULL,
    params            TEXT NOT NULL,
    parent_job_id     TEXT REFERENCES jobs (id),
    state             TEXT NOT NULL CHECK (state IN (
                          'queued', 'submitting', 'submitted', 'ready',
                          'delivered', 'failed', 'moderated', 'cancelled')),
    status_message_id INTEGER,
    result_message_id INTEGER,
    provider_task_id  TEXT,
    polling_url       TEXT,
    provider_status   TEXT,
    estimated_cost    REAL NOT NULL DEFAULT 0,
    cost              REAL,
    result_seed       INTEGER,
    result_width      INTEGER,
    result_height     INTEGER,
    error             TEXT,
    submitted_at      REAL,
    ready_at          REAL,
    finished_at       REAL,
    closed            INTEGER NOT NULL DEFAULT 0
);

CREATE INDEX jobs_open ON jobs (created_at) WHERE closed = 0;
CREATE INDEX jobs_by_user ON jobs (user_id, created_at);
CREATE INDEX jobs_by_parent ON jobs (parent_job_id);
CREATE UNIQUE INDEX jobs_by_task ON jobs (provider, provider_task_id)
    WHERE provider_task_id IS NOT NULL;

-- Reference images sent with a job, kept so a queued job can be submitted after a restart.
CREATE TABLE job_inputs (
    job_id       TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    position     INTEGER NOT NULL,
    content_type TEXT NOT NULL,
    width        INTEGER NOT NULL,
    height       INTEGER NOT NULL,
    data         BLOB NOT NULL,
    PRIMARY KEY (job_id, position)
);

-- Downloaded results, kept until they are posted (provider links expire in minutes).
CREATE TABLE job_outputs (
    job_id       TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    position     INTEGER NOT NULL,
    content_type TEXT NOT NULL,
    width        INTEGER NOT NULL,
    height       INTEGER NOT NULL,
    data         BLOB NOT NULL,
    PRIMARY KEY (job_id, position)
);

-- Small facts the bot keeps about itself (e.g. the hash of the last synced command tree).
CREATE TABLE app_state (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
