"""Data sources: verified HTTP downloads and the parquet shards pretraining reads."""
