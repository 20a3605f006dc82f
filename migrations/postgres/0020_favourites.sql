-- Favourites and the showcase (bot/community/favourites.py, docs/creative-tools.md).

-- A member's favourite results (the ⭐ button, /favourites), across servers. A purged job
-- takes its favourites with it (retention, a departed server's erasure).
CREATE TABLE favourites (
    user_id    BIGINT NOT NULL,
    job_id     TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    created_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (user_id, job_id)
);
-- /favourites pages, newest first.
CREATE INDEX favourites_newest ON favourites (user_id, created_at);
-- Deleting a job finds its favourites without a scan.
CREATE INDEX favourites_by_job ON favourites (job_id);

-- A result shared to its server's showcase channel, once. The row is claimed before the post
-- (message_id NULL) so a double click or a second process cannot post it twice; a claim
-- never completed (a crash between claim and post) may be taken over once it is stale.
CREATE TABLE showcase_posts (
    job_id     TEXT PRIMARY KEY REFERENCES jobs (id) ON DELETE CASCADE,
    guild_id   BIGINT NOT NULL,
    channel_id BIGINT NOT NULL,
    shared_by  BIGINT NOT NULL,
    claimed_at DOUBLE PRECISION NOT NULL,
    message_id BIGINT,  -- NULL until posted
    posted_at  DOUBLE PRECISION
);

-- Where shared results go (/settings showcase); NULL: sharing is off.
ALTER TABLE guild_settings ADD COLUMN showcase_channel_id BIGINT;
