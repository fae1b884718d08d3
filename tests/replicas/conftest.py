"""The replicas' fixtures: two `tierone serve` processes per module (tests/servers.py)."""

from tests.servers import replica_pair  # noqa: F401  (fixture)
