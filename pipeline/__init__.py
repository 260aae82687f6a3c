"""Orchestration: config, the stage graph, Beam chaining, artifacts, metadata, cache."""
