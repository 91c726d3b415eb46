"""bench.py's helpers: the plain reference model it times ours against."""
