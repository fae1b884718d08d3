"""The HTTP API: dependencies, schemas, error table and routes that server.py assembles."""
