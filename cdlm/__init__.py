"""cdlm: a continuous embedding-space diffusion language model on the `solvers` SDE toolkit."""

from cdlm.data import TextDataModule
from cdlm.models import AttributeClassifier, AutoregressiveLM, DiffusionLM, LanguageModel, MaskedDiffusionLM

__all__ = ["AttributeClassifier", "AutoregressiveLM", "DiffusionLM", "LanguageModel", "MaskedDiffusionLM", "TextDataModule"]
