"""A base model's folder may set its own fit learning rates and restarts (`perfusion_fit.json`)."""

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from bench.quality.settings import LR_SCALE, STUDIO_RECIPE, full_recipes
from workers.perfusion import FitConfig, base_fit_defaults, default_batch
from workers.perfusion.fit import BASE_FIT_FILE
from workers.toyworld.evaluate import MODEL_DIR


def _pipe(folder: Path | str) -> SimpleNamespace:
    return SimpleNamespace(_perfusion_base_id=str(folder), config={})


def test_a_folder_without_the_file_and_a_hub_id_keep_the_library_defaults(tmp_path) -> None:
    assert base_fit_defaults(_pipe(tmp_path)) == {}
    assert base_fit_defaults(_pipe("runwayml/stable-diffusion-v1-5")) == {}


def test_the_folder_file_sets_the_learning_rates(tmp_path) -> None:
    (tmp_path / BASE_FIT_FILE).write_text(json.dumps({"lr_embedding": 0.1, "lr_value": 0.5}))
    assert base_fit_defaults(_pipe(tmp_path)) == {"lr_embedding": 0.1, "lr_value": 0.5}


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ({"lr_embeding": 0.1}, "unknown fields"),
        ({"lr_value": 0}, "must be positive"),
        ({"restarts": 0}, "whole number >= 1"),
        ({"restarts": 1.5}, "whole number >= 1"),
        ({"grad_accum": True}, "whole number >= 1"),
    ],
)
def test_a_wrong_file_is_refused_not_ignored(tmp_path, content: dict, message: str) -> None:
    (tmp_path / BASE_FIT_FILE).write_text(json.dumps(content))
    with pytest.raises(ValueError, match=message):
        base_fit_defaults(_pipe(tmp_path))


def test_the_folder_file_sets_the_accumulation_and_restarts(tmp_path) -> None:
    (tmp_path / BASE_FIT_FILE).write_text(json.dumps({"grad_accum": 4, "restarts": 2}))
    assert base_fit_defaults(_pipe(tmp_path)) == {"grad_accum": 4, "restarts": 2}


def test_the_toy_models_rates_are_the_harness_perfusion_recipe() -> None:
    """The product's fits on the bundled model and the harness's rows run alike: its rates are
    the Perfusion rows', its accumulation the studio row's (on the CPU's batch of 4)."""
    rates = base_fit_defaults(_pipe(MODEL_DIR))
    studio = full_recipes()[STUDIO_RECIPE]
    assert rates == {
        "lr_embedding": full_recipes()["perfusion"].lr_embedding,
        "lr_value": full_recipes()["perfusion"].lr_value,
        "grad_accum": studio.grad_accum,
    }
    assert (studio.batch_size, studio.lr_value) == (
        default_batch("sd", False)[0],
        rates["lr_value"],
    )
    assert rates["lr_embedding"] == pytest.approx(LR_SCALE * FitConfig.lr_embedding)
    assert rates["lr_value"] == pytest.approx(LR_SCALE * FitConfig.lr_value)


def test_a_fit_job_runs_with_the_folders_rates(tmp_path) -> None:
    from tests.support.tiny_model import save_tiny_model
    from workers.fit_config import fit_config
    from workers.perfusion import load_pipeline

    folder = tmp_path / "model"
    save_tiny_model(folder)
    pipe = load_pipeline(str(folder), "cpu")
    assert base_fit_defaults(pipe) == {}
    assert fit_config(pipe, False, steps=3, seed=0).lr_value == FitConfig.lr_value
    (folder / BASE_FIT_FILE).write_text(json.dumps({"lr_embedding": 0.02, "lr_value": 0.2}))
    config = fit_config(pipe, False, steps=3, seed=0)
    assert (config.lr_embedding, config.lr_value) == (0.02, 0.2)


def test_a_fit_job_accumulates_as_the_folder_says_unless_the_settings_set_a_batch(
    tmp_path, monkeypatch
) -> None:
    from app.config import get_settings
    from tests.support.tiny_model import save_tiny_model
    from workers.fit_config import fit_config
    from workers.perfusion import load_pipeline

    folder = tmp_path / "model"
    save_tiny_model(folder)
    pipe = load_pipeline(str(folder), "cpu")
    (folder / BASE_FIT_FILE).write_text(json.dumps({"grad_accum": 4, "restarts": 2}))
    config = fit_config(pipe, False, steps=3, seed=0)
    assert (config.batch_size, config.grad_accum, config.restarts) == (4, 4, 2)
    monkeypatch.setenv("STUDIO_FIT_BATCH_SIZE", "2")
    monkeypatch.setenv("STUDIO_FIT_GRAD_ACCUM", "3")
    get_settings.cache_clear()
    try:
        config = fit_config(pipe, False, steps=3, seed=0)
    finally:
        get_settings.cache_clear()
    assert (config.batch_size, config.grad_accum) == (2, 3)
