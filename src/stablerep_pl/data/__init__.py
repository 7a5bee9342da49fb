"""Data: the on-the-fly and shard data modules, resumable loaders and collation (seeded per-item draws)."""
