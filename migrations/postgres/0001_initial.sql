-- Jobs: one row per accepted generation request, moved through explicit states.
-- Times are Unix seconds (DOUBLE PRECISION). `closed` = the requester has been shown the outcome.
CREATE TABLE jobs (
    id                TEXT PRIMARY KEY,
    created_at        DOUBLE PRECISION NOT NULL,
    updated_at        DOUBLE PRECISION NOT NULL,
    guild_id          BIGINT,
    channel_id        BIGINT NOT NULL,
    user_id           BIGINT NOT NULL,
    variant           TEXT NOT NULL,
    provider          TEXT NOT NULL,
    prompt            TEXT NOT NULL,
    params            TEXT NOT NULL,
    parent_job_id     TEXT REFERENCES jobs (id),
    state             TEXT NOT NULL CHECK (state IN (
                          'queued', 'submitting', 'submitted', 'ready',
                          'delivered', 'failed', 'moderated', 'cancelled')),
    status_message_id BIGINT,
    result_message_id BIGINT,
    provider_task_id  TEXT,
    polling_url       TEXT,
    provider_status   TEXT,
    estimated_cost    DOUBLE PRECISION NOT NULL DEFAULT 0,
    cost              DOUBLE PRECISION,
    result_seed       BIGINT,
    result_width      BIGINT,
    result_height     BIGINT,
    error             TEXT,
    submitted_at      DOUBLE PRECISION,
    ready_at          DOUBLE PRECISION,
    finished_at       DOUBLE PRECISION,
    closed            BIGINT NOT NULL DEFAULT 0
);

CREATE INDEX jobs_open ON jobs (created_at) WHERE closed = 0;
CREATE INDEX jobs_by_user ON jobs (user_id, created_at);
CREATE INDEX jobs_by_parent ON jobs (parent_job_id);
CREATE UNIQUE INDEX jobs_by_task ON jobs (provider, provider_task_id)
    WHERE provider_task_id IS NOT NULL;

-- Reference images sent with a job, kept so a queued job can be submitted after a restart.
CREATE TABLE job_inputs (
    job_id       TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    position     BIGINT NOT NULL,
    content_type TEXT NOT NULL,
    width        BIGINT NOT NULL,
    height       BIGINT NOT NULL,
    data         BYTEA NOT NULL,
    PRIMARY KEY (job_id, position)
);

-- Downloaded results, kept until they are posted (provider links expire in minutes).
CREATE TABLE job_outputs (
    job_id       TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    position     BIGINT NOT NULL,
    content_type TEXT NOT NULL,
    width        BIGINT NOT NULL,
    height       BIGINT NOT NULL,
    data         BYTEA NOT NULL,
    PRIMARY KEY (job_id, position)
);

-- Small facts the bot keeps about itself (e.g. the hash of the last synced command tree).
CREATE TABLE app_state (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
