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


def test_warm_compiles_and_runs_a_jobs_shapes_once_when_the_settings_say_so(
    embedded_env, monkeypatch
) -> None:
    import workers.perfusion.compile as compiling
    from tests.conftest import reset_caches

    calls: list[str] = []

    class Unet:
        _perfusion_compiled = None

    pipe = type("Pipe", (), {"unet": Unet()})()

    def compile_unet(unet: object) -> int:
        calls.append("compile")
        unet._perfusion_compiled = "inductor"  # type: ignore[attr-defined]
        return 3

    monkeypatch.setattr(compiling, "compile_unet", compile_unet)
    monkeypatch.setattr(compiling, "warm_up", lambda *args: calls.append("warm-up"))
    monkeypatch.setattr("workers.perfusion.architecture", lambda pipe: "sd")
    cache = ModelCache(size=1, device="cpu", loader=lambda base, device: pipe)
    monkeypatch.setattr(cache, "covariance", lambda model: "covariance")
    assert cache.ready("base").pipe is pipe and calls == []  # off by default
    monkeypatch.setenv("STUDIO_COMPILE_UNET", "1")
    reset_caches()
    cache.warm("base")
    cache.ready("base")
    assert calls == ["compile", "warm-up"]
    assert (embedded_env / "cache" / "inductor").name == "inductor"
