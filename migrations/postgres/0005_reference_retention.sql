-- How many reference images a job had, kept after the images themselves are purged
-- (REFERENCE_RETENTION_DAYS), so Reroll/Remix can say why they can't reuse them.
ALTER TABLE jobs ADD COLUMN reference_count BIGINT NOT NULL DEFAULT 0;
UPDATE jobs SET reference_count = (
    SELECT count(*) FROM job_inputs WHERE job_inputs.job_id = jobs.id
);
CREATE INDEX jobs_finished ON jobs (finished_at) WHERE closed = 1;
