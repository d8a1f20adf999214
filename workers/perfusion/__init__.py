"""Perfusion (key-locked rank-one editing) for diffusers Stable Diffusion 1.x/2.x and XL pipelines.

A library: it knows torch and diffusers only. See /work/shared/PERFUSION.md for the method.
"""

from .apply import (
    AppliedConcepts,
    ConceptControl,
    apply_concepts,
    load_concepts_into,
    remove_concepts,
    strength_to_control,
)
from .concept import (
    Concept,
    ConceptFormatError,
    ConceptMismatch,
    concept_from_bytes,
    concept_to_bytes,
    load_concept,
    save_concept,
    validate_concept,
)
from .covariance import Covariance, compute_covariance, get_covariance
from .fit import (
    FitCanceled,
    FitCheckpoint,
    FitConfig,
    FitProgress,
    base_fit_defaults,
    default_batch,
    fit_concept,
)
from .generate import GenerationCanceled, generate
from .pipeline import default_base, load_pipeline, model_fingerprint, pipeline_class_name
from .sides import architecture, text_side
from .text import ARCH_NAMES, ARCH_SD, ARCH_SDXL

__all__ = [
    "ARCH_NAMES",
    "ARCH_SD",
    "ARCH_SDXL",
    "AppliedConcepts",
    "Concept",
    "ConceptControl",
    "ConceptFormatError",
    "ConceptMismatch",
    "Covariance",
    "FitCanceled",
    "FitCheckpoint",
    "FitConfig",
    "FitProgress",
    "GenerationCanceled",
    "apply_concepts",
    "architecture",
    "base_fit_defaults",
    "compute_covariance",
    "concept_from_bytes",
    "concept_to_bytes",
    "default_base",
    "default_batch",
    "fit_concept",
    "generate",
    "get_covariance",
    "load_concept",
    "load_concepts_into",
    "load_pipeline",
    "model_fingerprint",
    "pipeline_class_name",
    "remove_concepts",
    "save_concept",
    "strength_to_control",
    "text_side",
    "validate_concept",
]
