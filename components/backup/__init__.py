"""Backups of the stack's PostgreSQL with pgBackRest: settings, rendered config, sidecar."""
