"""The harness's result: one row per method or reference, the strength sweep, and the claims
the issue asks of Perfusion, each judged from the measured numbers."""

from __future__ import annotations

from dataclasses import dataclass, field

from bench.common import human_bytes, table
from bench.quality.settings import STUDIO_RECIPE, TRAIN_BACKGROUNDS, Settings, drift_prompts


@dataclass
class Row:
    label: str
    method: str | None  # None for the reference rows
    recipe: str
    hit_rate: float
    correlogram: float
    prompt_fidelity: float
    drift_superclass: float | None
    drift_other: float | None
    fit_s: float | None = None
    peak_rss_mib: float | None = None
    fit_rss_delta_mib: float | None = None
    artefact_bytes: float | None = None

    @property
    def concept_fidelity(self) -> float:
        """The headline concept fidelity: the reader's hit rate on the subject."""
        return self.hit_rate


@dataclass
class QualityReport:
    settings: Settings
    rows: list[Row]
    sweep: list[dict]
    wall_s: float
    isolated: bool
    per_subject: dict = field(default_factory=dict)
    covariance_s: float = float("nan")

    def row(self, key: str) -> Row:
        """A method's row by its recipe key, or a reference row by the start of its label."""
        for r in self.rows:
            if r.method == key or (r.method is None and r.label.startswith(key)):
                return r
        raise KeyError(key)

    def quality_table(self) -> str:
        headers = [
            "Method", "Recipe (toy scale)", "Concept fidelity ↑ (hit rate)", "Correlogram ↑",
            "Prompt fidelity ↑", "Drift ↓ superclass prompt", "Drift ↓ other prompt",
            "Fit time (s)", "Peak RSS (MiB)", "Fit Δ RSS (MiB)", "Artefact",
        ]  # fmt: skip
        rows = [
            [
                r.label, r.recipe, r.hit_rate, r.correlogram, r.prompt_fidelity,
                r.drift_superclass, r.drift_other, r.fit_s, r.peak_rss_mib, r.fit_rss_delta_mib,
                human_bytes(r.artefact_bytes) if r.artefact_bytes is not None else None,
            ]
            for r in self.rows
        ]  # fmt: skip
        return table(headers, rows)

    def sweep_table(self) -> str:
        headers = [
            "Strength",
            "Concept fidelity ↑ (hit rate)",
            "Correlogram ↑",
            "Prompt fidelity ↑",
        ]
        rows = [
            [f"{s['strength']:.2f}", s["hit_rate"], s["correlogram"], s["prompt_fidelity"]]
            for s in self.sweep
        ]
        return table(headers, rows)

    def per_subject_table(self) -> str:
        names = self.settings.subjects
        headers = ["Method", *names]
        rows = [[label, *(scores[n] for n in names)] for label, scores in self.per_subject.items()]
        return table(headers, rows)

    def claims(
        self, perfusion: str = "perfusion", lora: str = "lora", sweep: bool = True
    ) -> list[tuple[str, bool]]:
        """What the method promises, each judged from this run's numbers: the `perfusion` row
        against the `lora` row, and (with `sweep`) the strength sweep."""
        p = self.row(perfusion)
        base = self.row("Reference: base model")
        words = self.row("Reference: best words-only")
        out = [
            (
                f"concept fidelity ≥ 3× the base superclass prompt's "
                f"({p.hit_rate:.3f} vs {base.hit_rate:.3f})",
                p.hit_rate >= 3 * base.hit_rate and p.hit_rate > 0,
            ),
            (
                f"concept fidelity above the best words-only prompt's "
                f"({p.hit_rate:.3f} vs {words.hit_rate:.3f})",
                p.hit_rate > words.hit_rate,
            ),
            (
                f"prompt fidelity ≥ 0.9 on unseen backgrounds ({p.prompt_fidelity:.3f})",
                p.prompt_fidelity >= 0.9,
            ),
        ]
        if any(r.method == lora for r in self.rows):
            other = self.row(lora)
            drift_p = (p.drift_superclass or 0) + (p.drift_other or 0)
            drift_l = (other.drift_superclass or 0) + (other.drift_other or 0)
            out += [
                (
                    f"concept fidelity ≥ LoRA's ({p.hit_rate:.3f} vs {other.hit_rate:.3f})",
                    p.hit_rate >= other.hit_rate,
                ),
                (
                    f"drift on concept-free prompts ≤ 1/10 of LoRA's "
                    f"({drift_p / 2:.2f} vs {drift_l / 2:.2f} per pixel, mean of both prompts)",
                    drift_p <= drift_l / 10,
                ),
            ]
        if sweep and len(self.sweep) > 1:
            rates = [s["hit_rate"] for s in self.sweep]
            default = next((s for s in self.sweep if s["strength"] == 0.5), self.sweep[0])
            out += [
                (
                    "strength sweep rises monotonically in concept fidelity ("
                    + " ≤ ".join(f"{r:.3f}" for r in rates)
                    + ")",
                    # Flat is not a slider: the strongest end must beat the weakest.
                    all(a <= b for a, b in zip(rates, rates[1:], strict=False))
                    and rates[-1] > rates[0],
                ),
                (
                    f"prompt fidelity ≥ 0.9 at the default strength "
                    f"({default['prompt_fidelity']:.3f})",
                    default["prompt_fidelity"] >= 0.9,
                ),
            ]
        return out

    def notes(self) -> str:
        s = self.settings
        memory = (
            "Peak RSS = ru_maxrss of the method's own subprocess read right after its last fit "
            "(includes Python, torch and the loaded pipeline); Fit Δ RSS = that minus the "
            "high-water mark right after loading the pipeline."
            if self.isolated
            else "Run in-process (not isolated): memory figures are not per method."
        )
        superclass_prompt, other_prompt = drift_prompts(s.subjects[0])
        return (
            f"Subjects: {', '.join(s.subjects)} ({s.n_photos} photos each on "
            f"{'/'.join(TRAIN_BACKGROUNDS)} backgrounds, two per subject); evaluated on "
            f"{s.test_backgrounds} unseen backgrounds × {s.n_eval} images, {s.gen_steps} DDIM "
            f"steps, guidance {s.guidance}, seed {s.seed}, {s.threads} torch thread(s). "
            "Concept fidelity: the fraction of images in which the toy-world reader finds the "
            "subject — its shape, main colour, pattern and second colour, all four (the second "
            "colour is never in any caption, so words alone get it by chance). Correlogram: "
            "colour-pattern correlogram intersection of the object with the subject's photos "
            "(bench/fidelity.py). Prompt fidelity: fraction of images whose background is the "
            "asked-for unseen one. Drift: mean |Δ| pixel (0-255) vs the base model, same seeds, "
            f"on prompts WITHOUT the concept (e.g. '{superclass_prompt}' and "
            f"'{other_prompt}'), {s.n_drift} images each. {memory} Fit time excludes loading "
            "the model and Perfusion's per-base-model covariance (computed once, "
            f"{self.covariance_s:.1f} s); DreamBooth's includes generating its class images. "
            f"Artefacts are the saved files. Wall time of the whole harness: {self.wall_s:.0f} s."
        )

    def render(self) -> str:
        def listed(claims: list[tuple[str, bool]]) -> str:
            return "\n".join(f"- {'met' if ok else '**not met**'}: {text}" for text, ok in claims)

        studio = self.settings.recipes.get(STUDIO_RECIPE)
        same = self.settings.recipes.get("perfusion")
        blocks = []
        if same is not None:
            blocks.append(
                f"Perfusion ({same.steps} steps × batch {same.batch_size * same.grad_accum}, the "
                "budget every method has; default strength) against its promises:\n\n"
                + listed(self.claims(sweep=studio is None))
            )
        if studio is not None:
            blocks.append(
                f"Perfusion at the studio's fit here ({studio.steps} steps × batch "
                f"{studio.batch_size * studio.grad_accum}) against LoRA at the same batch, and "
                "the strength sweep (on that fit):\n\n"
                + listed(self.claims(STUDIO_RECIPE, "lora_b16"))
            )
        text = "\n\n".join(blocks)
        return (
            "### Personalization quality (mean over subjects)\n\n"
            + self.quality_table()
            + "\n\n"
            + self.notes()
            + "\n\n"
            + text
            + "\n\n### Concept fidelity per subject\n\n"
            + self.per_subject_table()
            + "\n\n### Perfusion strength sweep (one fit, inference control only)\n\n"
            + self.sweep_table()
            + f"\n\nOne fit per subject; {self.settings.n_sweep} images per unseen background"
            + f" at each strength ({self.settings.n_eval} at the default: the evaluation images,"
            + " the same seeds).\n"
        )
