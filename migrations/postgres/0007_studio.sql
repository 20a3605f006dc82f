-- Studios (shared creation threads): ending one takes several Discord steps (a gallery in the
-- thread, one in its channel, then archiving and locking the thread). Each step is recorded,
-- so an ending interrupted by a restart resumes where it stopped and nothing is posted twice.
-- A message id of 0 means the step could not be done (the channel is gone or forbidden).
ALTER TABLE studios ADD COLUMN thread_gallery_message_id BIGINT;
ALTER TABLE studios ADD COLUMN finished_at DOUBLE PRECISION;  -- NULL until every ending step is done

-- A studio's budget sums the credits of the jobs in its thread (a job's channel is the thread).
CREATE INDEX jobs_by_channel ON jobs (channel_id, created_at);
