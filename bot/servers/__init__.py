"""Per-server configuration and the audit log: the floor that moderation and community
both stand on (neither imports the other's rules from here)."""
