"""Benchmarks that print tables (never timed asserts in tests).

- `python -m bench`: everything; rewrites docs/benchmarks.md (under 15 min on the CPU).
- `python -m bench.quality [--quick]`: Perfusion vs LoRA, DreamBooth, TI on toy concepts.
- `python -m bench.generation`: images/s with 0, 1 and 3 concepts applied.
- `python -m bench.size`: concept file vs LoRA vs DreamBooth bytes (toy world, SD 1.5).
- `python -m bench.web_load`: 50 loopback clients and websocket progress latency.
"""
