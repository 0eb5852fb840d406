"""A study file: its sections checked (sections) and turned into trial configs (spec)."""
