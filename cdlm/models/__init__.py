"""The Lightning models, side by side on one backbone: continuous diffusion, masked diffusion,
autoregressive, and the attribute classifier that guides a trained diffusion model."""

from cdlm.models.autoregressive import AutoregressiveLM
from cdlm.models.base import LanguageModel
from cdlm.models.classifier import AttributeClassifier
from cdlm.models.diffusion import DiffusionLM
from cdlm.models.distilled import DistilledDiffusionLM
from cdlm.models.masked import MaskedDiffusionLM

__all__ = ["AttributeClassifier", "AutoregressiveLM", "DiffusionLM", "DistilledDiffusionLM", "LanguageModel", "MaskedDiffusionLM"]
