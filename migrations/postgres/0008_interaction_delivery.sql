-- A request that came as an interaction is shown and finished through that interaction's own
-- webhook (its token): interaction endpoints have a bucket per token and escape the global
-- rate limit, where a channel message costs one of 5 posts per 5 s in a busy channel.
-- The token is a credential: it is erased when the job ends and once it expires (15 minutes).
ALTER TABLE jobs ADD COLUMN interaction_token TEXT;
ALTER TABLE jobs ADD COLUMN interaction_expires_at DOUBLE PRECISION;
-- A request made by replying to a message (no interaction): its first post replies to it.
ALTER TABLE jobs ADD COLUMN reply_to_message_id BIGINT;

CREATE INDEX jobs_with_token ON jobs (interaction_expires_at) WHERE interaction_token IS NOT NULL;
