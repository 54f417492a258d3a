"""``calmq bench``: enqueue, drain and latency runs against a real store."""
