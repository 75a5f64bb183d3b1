"""The Lightning models, side by side on one backbone: continuous diffusion, autoregressive, and
the attribute classifier that guides a trained diffusion model."""

from cdlm.models.autoregressive import AutoregressiveLM
from cdlm.models.base import LanguageModel
from cdlm.models.classifier import AttributeClassifier
from cdlm.models.diffusion import DiffusionLM

__all__ = ["AttributeClassifier", "AutoregressiveLM", "DiffusionLM", "LanguageModel"]
