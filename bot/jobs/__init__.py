"""The job engine: persistence, fair scheduling, polling, delivery, recovery."""
