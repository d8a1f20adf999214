"""Every place a strength is defaulted agrees, and it is the trained concept (λ = 1).

The library's CLI, the API's generation body, a fit's sample images, an imported concept's
samples and the concept page's slider once had four different defaults (0.5, 0.6, 1.0, 0.6).
"""

from pathlib import Path

from app.generations.schemas import GenerationIn
from app.jobs import params
from workers.perfusion import apply
from workers.perfusion.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]


def test_the_app_and_the_library_share_one_default_and_it_is_the_trained_concept() -> None:
    assert params.DEFAULT_STRENGTH == apply.DEFAULT_STRENGTH
    assert apply.strength_to_control(apply.DEFAULT_STRENGTH).value == 1.0


def test_api_samples_and_the_page_use_it() -> None:
    assert GenerationIn(prompt="a red star").strength == params.DEFAULT_STRENGTH
    assert params.SamplePolicy().strength == params.DEFAULT_STRENGTH
    slider = (ROOT / "templates/concept.html").read_text()
    assert 'value="{{ limits.DEFAULT_STRENGTH }}"' in slider


def test_the_cli_leaves_the_default_to_the_library() -> None:
    args = build_parser().parse_args(["generate", "--prompt", "a red star", "--out", "x"])
    assert args.strength is None
