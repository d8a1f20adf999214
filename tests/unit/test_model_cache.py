"""The worker's model cache loads a base model once and evicts the least recently used."""

from workers.model_cache import ModelCache


def test_models_load_once_and_the_least_recently_used_is_evicted() -> None:
    loaded: list[str] = []

    def loader(base: str, device: str) -> object:
        loaded.append(base)
        return object()

    cache = ModelCache(size=2, device="cpu", loader=loader)
    a = cache.get("a")
    assert cache.get("a") is a
    cache.get("b")
    cache.get("a")  # a is now the most recent
    cache.get("c")  # evicts b
    cache.get("a")
    cache.get("b")
    assert loaded == ["a", "b", "c", "b"]
    assert (cache.loads, cache.hits) == (4, 3)
    assert cache.stats(a)["model_loads"] == 4
