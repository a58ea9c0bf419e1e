"""Integrations with frameworks; each is imported only by who uses it."""
