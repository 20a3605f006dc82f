"""Community servers: moderators' settings, the audit log, approvals and shared threads."""
