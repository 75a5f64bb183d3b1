"""cdlm: a continuous embedding-space diffusion language model on the `solvers` SDE toolkit."""

from cdlm.autoregressive import AutoregressiveLM
from cdlm.classifier import AttributeClassifier
from cdlm.data import TextDataModule
from cdlm.diffusion import DiffusionLM
from cdlm.lm import LanguageModel

__all__ = ["AttributeClassifier", "AutoregressiveLM", "DiffusionLM", "LanguageModel", "TextDataModule"]
