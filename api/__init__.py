"""The HTTP API that server.py assembles: routes per audience, their dependencies, bodies, error table, middlewares."""
