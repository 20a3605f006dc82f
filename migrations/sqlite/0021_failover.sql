-- FAILOVER=aiml (bot/jobs/failover.py): a BFL job BFL could not take, made by the AI/ML API.

-- The member's roles when they asked, for their role allowances when the backup provider's
-- estimate needs more than was reserved (a comma-separated list of ids; NULL: none).
ALTER TABLE jobs ADD COLUMN role_ids TEXT;
-- The variant the member asked for (e.g. `pro`) when another provider made it instead, and
-- why BFL could not take it (`no_credits` or `unavailable`): the result says so, and Reroll
-- asks for the original again.
ALTER TABLE jobs ADD COLUMN failover_from TEXT;
ALTER TABLE jobs ADD COLUMN failover_reason TEXT;
