"""Datasets: readers of the users' layouts, Parquet shards written once, and the Ray Data pipeline."""
