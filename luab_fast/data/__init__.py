"""Datasets: the built-in demo dataset (``make_demo`` / ``ensure_demo``) and the loaders."""
