-- A closed job's credentials are of no further use: closing a job now erases its webhook
-- secret (as it already did its interaction token). This erases those kept before.
UPDATE jobs SET webhook_secret = NULL, interaction_token = NULL
WHERE closed = 1 AND (webhook_secret IS NOT NULL OR interaction_token IS NOT NULL);
