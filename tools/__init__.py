"""Tools the bot may run, and the backends they act through (embedded SQLite, HTTP adapters)."""
