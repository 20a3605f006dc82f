-- Several images per prompt (images: 1–4 on BFL): each image is its own job, and the jobs of
-- one request form a batch shown in one message (bot/jobs/batches.py). `batch_id` is the
-- first job's id (the one whose message shows the batch); NULL for a job on its own.
ALTER TABLE jobs ADD COLUMN batch_id TEXT;
-- The image's place in its batch (0 for the first), and how many images the batch has.
ALTER TABLE jobs ADD COLUMN batch_index BIGINT NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN batch_size BIGINT NOT NULL DEFAULT 1;
-- A batch's jobs, read by each job's ending to see whether the batch is complete.
CREATE INDEX jobs_by_batch ON jobs (batch_id, batch_index) WHERE batch_id IS NOT NULL;
