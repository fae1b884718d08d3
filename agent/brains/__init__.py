"""Brains: what understands messages and words replies. The policy decides; brains never do."""
