"""One package per pipeline stage: component.py (spec) + executor.py (work)."""
