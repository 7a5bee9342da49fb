"""Training data: the on-the-fly and shard data modules, resumable loaders, seeded per-item draws and collation."""
