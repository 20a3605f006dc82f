-- Find the job behind a Discord message (a reply to a result, a result button, /history).
CREATE INDEX jobs_by_status_message ON jobs (status_message_id)
    WHERE status_message_id IS NOT NULL;
CREATE INDEX jobs_by_result_message ON jobs (result_message_id)
    WHERE result_message_id IS NOT NULL;
