"""Training on Ray Train: the per-worker loop and the driver that builds the trainer."""
