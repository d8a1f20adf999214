"""Benchmarks that print tables (never timed asserts in tests).

    python -m bench                 # everything, rewrites docs/benchmarks.md (< 15 min on CPU)
    python -m bench.quality [--quick]   # Perfusion vs LoRA / DreamBooth / TI on toy concepts
    python -m bench.generation      # images/s with 0, 1, 3 concepts applied
    python -m bench.size            # concept file vs LoRA vs DreamBooth bytes (toy, SD 1.5)
    python -m bench.web_load        # 50 loopback clients + websocket progress latency
"""
