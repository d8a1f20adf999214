"""Webhooks: a job's callback URL is told, signed and at least once, when the job ends."""
