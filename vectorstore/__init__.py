"""The routing index: runbook examples embedded into Chroma, queried per customer message."""
