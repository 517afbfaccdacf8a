"""Numbered, append-only SQL migrations, applied in order under PRAGMA user_version."""
