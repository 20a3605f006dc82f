-- The daily cap on refunded jobs (MAX_REFUNDED_JOBS_PER_DAY) counts a member's refunds in
-- today's window inside every reservation: only refunded rows are indexed, so the count
-- reads those and not every job the member made today.
CREATE INDEX ledger_refunded ON ledger (guild_id, user_id, reserved_at) WHERE status = 'refunded';
