"""Run folders, summaries, plots and predictions."""
