-- Privacy (bot/privacy, docs/privacy.md): how long members' data is kept, erasure at a
-- member's request, and the data of servers the bot has left.

-- When a job's prompt was removed (PROMPT_RETENTION_DAYS or /privacy delete): the text is
-- blanked in `prompt` and `params`, and this says why it is missing (Reroll, /history).
ALTER TABLE jobs ADD COLUMN prompt_removed_at REAL;
-- The job this one was made from has been purged (FINISHED_JOB_RETENTION_DAYS): its history
-- starts here, and says that older steps are gone.
ALTER TABLE jobs ADD COLUMN parent_purged INTEGER NOT NULL DEFAULT 0;
-- The finished jobs whose prompt is still kept, oldest first: each purge round reads only these.
CREATE INDEX jobs_prompt_kept ON jobs (finished_at) WHERE closed = 1 AND prompt_removed_at IS NULL;

-- Audit entries by age, for AUDIT_RETENTION_DAYS.
CREATE INDEX audit_by_time ON audit_log (at);
-- The entries whose text is still whole, for PROMPT_RETENTION_DAYS: those that quote a
-- prompt (`bot.privacy.retention.PROMPT_ACTIONS`) are most of them.
CREATE INDEX audit_text_kept ON audit_log (at) WHERE detail <> '[prompt removed]';
-- The entries about a member (/privacy export and delete, /mod why).
CREATE INDEX audit_by_target ON audit_log (target_id, at) WHERE target_id IS NOT NULL;
-- Strikes by member across servers (/privacy export and delete).
CREATE INDEX strikes_by_user ON strikes (user_id);

-- A server the bot has left (or was removed from). Its data is erased once
-- DEPARTED_SERVER_GRACE_DAYS have passed since `left_at`; coming back deletes the row.
CREATE TABLE server_departures (
    guild_id INTEGER PRIMARY KEY,
    left_at  REAL NOT NULL
) WITHOUT ROWID;  -- a server id is Discord's number, never one SQLite makes up
