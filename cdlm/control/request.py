"""What a caller asks of samples, beside the sampler settings: one object, built once."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from cdlm.control.constraints import Constraints, build_constraints


@dataclass
class Request:
    """Known tokens, length and attributes asked of every sample.

    `anchors` {position: word} or [(position, word)]; `prefix`/`suffix`/`template` as in
    `cdlm.control.constraints`; `length` a number of tokens or "data" (each sample's drawn from
    the training texts); `attributes` one request for all samples or a list of one per sample
    (`cdlm.control.attributes`), guided with `guidance_scale`, and by a `classifier`'s gradient
    weighted by `classifier_scale`. A diffusion model's `sample_ids` turns it, once, into the
    `cdlm.sampling.plan.Plan` its sampler reads: the words become token ids, "data" lengths,
    the attribute requests rows.
    """

    anchors: dict | list | None = None
    prefix: str | None = None
    suffix: str | None = None
    template: str | None = None
    length: int | str | None = None
    attributes: object = None
    guidance_scale: float | None = None
    classifier: object = None
    classifier_scale: float = 1.0

    def __post_init__(self):
        if self.length is not None and self.length != "data" and (isinstance(self.length, bool)
                                                                   or not isinstance(self.length, int)):
            raise ValueError(f'length {self.length!r} is neither a number of tokens nor "data"')

    @classmethod
    def split(cls, request: Request | None, options: dict) -> tuple[Request, dict]:
        """(`request`, or a new one, with the fields that `options` name set; the other options):
        how a model's `sample_ids` takes both a Request and its fields as keywords."""
        names = {f.name for f in dataclasses.fields(cls)}
        fields = {k: v for k, v in options.items() if k in names and v is not None}
        rest = {k: v for k, v in options.items() if k not in names}
        return dataclasses.replace(request or cls(), **fields), rest

    def asked(self) -> dict:
        """The fields this request sets (classifier_scale only with a classifier)."""
        given = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if getattr(self, f.name) is not None}
        if self.classifier is None:
            given.pop("classifier_scale")
        return given

    @property
    def exact_length(self) -> int | None:
        return self.length if isinstance(self.length, int) else None  # "data" is a distribution, not a constraint

    def constraints(self, tokenizer, seq_len: int) -> Constraints | None:
        """The known tokens every sample must hold, or None when nothing is fixed."""
        if not (self.anchors or self.template is not None or self.prefix or self.suffix or self.exact_length is not None):
            return None
        return build_constraints(tokenizer, seq_len, self.anchors, self.prefix, self.suffix, self.template,
                                 self.exact_length)

    def beyond_prefix(self) -> bool:
        """Asks what a left-to-right model can only meet by rejection."""
        return bool(self.anchors or self.template is not None or self.suffix or self.exact_length is not None
                    or self.attributes is not None)
