"""The plan of one sampling call: what every sample must hold and what guides it, built once
from a `cdlm.control.request.Request` and passed whole to a sampler's `generate`."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from cdlm.sampling.base import content_lengths

CLEAN = ("none", "padding", "all")  # which known tokens a continuous model's network sees clean


@dataclass(frozen=True)
class Guidance:
    """How attributes guide the samples: classifier-free by the multi-hot `attribute_rows` [N, A] with
    `scale` (1: plain conditioning), and by the gradient of a `classifier` (an
    `cdlm.models.classifier.AttributeClassifier`) towards its `targets` [N, A'] weighted by
    `classifier_scale` (continuous models)."""

    attribute_rows: torch.Tensor | None = None
    scale: float = 1.0
    classifier: object = None
    targets: torch.Tensor | None = None
    classifier_scale: float = 1.0


@dataclass(frozen=True)
class Plan:
    """What a sampler imposes on N samples of L tokens and guides them by.

    `known_ids` [N, L] hold the token each sample must carry at a position, -1 where the sampler
    decides (anchors, templates, prefixes, and `pad_id` after a sample's length); `pad_banned`
    [N, L] forbids padding before that length; `logit_bias` [L, V] is -inf where a token is banned.
    `clean` says which known tokens a continuous model's network sees clean ("all": models
    trained with clean context; "padding": models trained with clean padding) rather than noised
    like the rest.
    """

    known_ids: torch.Tensor
    pad_id: int = 0
    logit_bias: torch.Tensor | None = None
    pad_banned: torch.Tensor | None = None
    guidance: Guidance = Guidance()
    clean: str = "none"

    def __post_init__(self):
        if self.clean not in CLEAN:
            raise ValueError(f"unknown clean {self.clean!r}; valid: {', '.join(CLEAN)}")

    @classmethod
    def build(cls, num_samples: int, seq_len: int, known_ids: torch.Tensor | None = None,
              logit_bias: torch.Tensor | None = None, lengths: torch.Tensor | None = None, pad_id: int = 0,
              guidance: Guidance = Guidance(), clean: str = "none") -> Plan:
        """The plan of `num_samples` samples: `known_ids` [L] shared by all or [num_samples, L]
        (-1 free), and `lengths` [num_samples] giving each sample its number of tokens, `pad_id`
        after it and none before."""
        if num_samples < 1:
            raise ValueError(f"num_samples must be positive, got {num_samples}")
        known = torch.full((seq_len,), -1, dtype=torch.long) if known_ids is None else known_ids.cpu()
        known = known.expand(num_samples, seq_len)  # a view: a plan of a million free samples costs no memory
        pad_banned = None
        if lengths is not None:
            after = torch.arange(seq_len)[None] >= lengths.cpu()[:, None]
            if (known[after] >= 0).any():
                raise ValueError("known tokens lie beyond a sampled length")
            known = known.clone()
            known[after] = pad_id
            pad_banned = ~after
        return cls(known, pad_id, logit_bias, pad_banned, guidance, clean)

    @property
    def num_samples(self) -> int:
        return self.known_ids.shape[0]

    @property
    def seq_len(self) -> int:
        return self.known_ids.shape[1]

    def rows(self, index, device: torch.device | str | None = None) -> Plan:
        """The plan of the samples at `index` (a slice or a tensor of positions), on `device`."""
        take = lambda v: None if v is None else v[index].to(device) if device is not None else v[index]  # noqa: E731
        g = self.guidance
        guidance = dataclasses.replace(g, attribute_rows=take(g.attribute_rows), targets=take(g.targets))
        bias = self.logit_bias if self.logit_bias is None or device is None else self.logit_bias.to(device)
        return dataclasses.replace(self, known_ids=take(self.known_ids).clone(), pad_banned=take(self.pad_banned),
                                   logit_bias=bias, guidance=guidance)

    def length_order(self) -> torch.Tensor | None:
        """A stable order [N] of the samples by content length (shortest first), so that batches
        hold samples of similar length; None when every sample has the same."""
        content = content_lengths(self.known_ids, self.pad_id)
        if bool((content == content[0]).all()):
            return None
        return torch.sort(content, stable=True).indices

    def restrict(self, logits: torch.Tensor) -> torch.Tensor:
        """`logits` [B, L, V] with the banned tokens at -inf: the logit bias, and padding before
        each sample's length."""
        if self.logit_bias is not None:
            logits = logits + self.logit_bias
        if self.pad_banned is not None:
            logits[..., self.pad_id] = logits[..., self.pad_id].masked_fill(self.pad_banned, float("-inf"))
        return logits

    @property
    def restricts(self) -> bool:
        return self.logit_bias is not None or self.pad_banned is not None


def guide(cond: torch.Tensor, uncond: torch.Tensor, scale: float) -> torch.Tensor:
    """Classifier-free guidance of token log-probabilities: log p_u + s (log p_c - log p_u)."""
    return uncond + scale * (cond - uncond)
