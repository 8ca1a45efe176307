"""Benchmark harness: the edge's hot routes against bare Granian and nginx, one command (`python -m bench.run`)."""
