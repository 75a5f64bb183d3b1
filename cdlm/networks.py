"""The networks: a transformer backbone shared by the diffusion score network (bidirectional,
time-conditioned), the masked diffusion denoiser (bidirectional, no time) and the autoregressive
baseline (causal), plus the learned token embedding."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from cdlm.settings import Settings, number, setting

CLEAN_LOG_SNR = 10.0  # the noise level a known (clean) token is presented at

# How the backbone knows where a token is:
# - learned: an absolute position table added to the input (GPT-2);
# - alibi: no table; every head's attention logits gain -slope_h * |i - j| (Press et al., ALiBi),
#   so attention is local from the first step whatever the input's scale;
# - learned_alibi: both;
# - rotary: no table; queries and keys are rotated by their positions (RoFormer).
POSITIONS = ("learned", "alibi", "learned_alibi", "rotary")

# hyperparameter → (test, what it must be); NaN fails every test (all comparisons are false)
_VALID = {
    "width": (lambda v: v >= 1, "a positive integer"),
    "depth": (lambda v: v >= 1, "a positive integer"),
    "heads": (lambda v: v >= 1, "a positive integer"),
    "embed_dim": (lambda v: v >= 1, "a positive integer"),
    "seq_len": (lambda v: v >= 1, "a positive integer"),
    "dropout": (lambda v: 0.0 <= v < 1.0, "a probability in [0, 1)"),
    "loops": (lambda v: v >= 1, "a positive integer"),
    "ema_decay": (lambda v: 0.0 <= v <= 1.0, "in [0, 1]"),
    "positions": (lambda v: v in POSITIONS, "one of " + ", ".join(POSITIONS)),
}


def check_hparams(**values) -> None:
    """ValueError naming the first hyperparameter out of its range (see `_VALID`)."""
    for name, value in values.items():
        ok, must_be = _VALID[name]
        if not ok(value):
            raise ValueError(f"{name} must be {must_be}, got {value}")


@dataclass(frozen=True)
class NetworkConfig(Settings):
    """A model's network, one group for every model (`--model.network.width 64`, YAML
    `network: {width: 64}`): the backbone's shape, which all three models share, then the
    embedding the continuous model diffuses in and how its score network's output is read
    (`ScoreNetwork`; the masked and autoregressive networks do not read these). One type for all,
    so that a change of model class on the command line keeps the shape given before it."""

    what = "network setting"

    width: int = setting(128, "hidden width of the transformer")
    depth: int = setting(4, "transformer blocks")
    heads: int = setting(4, "attention heads (width must be divisible by them)")
    dropout: float = setting(0.0, "dropout inside the blocks")
    loops: int = setting(1, "run the blocks this many times with tied weights (a looped transformer)")
    positions: str = setting("learned", "how the network knows where a token is: learned, alibi (attention biased "
                                        "by distance), learned_alibi, or rotary")
    embed_dim: int = setting(16, "continuous model: token embedding dimension d (the space the diffusion runs in)")
    normalize_embeddings: bool = setting(True, "continuous model: keep every embedding at norm sqrt(d)")
    interpolate: bool = setting(True, "continuous model: x0 = softmax(logits)·E (score interpolation) instead of a "
                                      "direct x0 head")
    output_prior: float = setting(0.0, "continuous model: weight of the closed-form skip logits c·x_t·Eᵀ (Plaid, "
                                       "LangFlow) added to the network's logits (0: off)")
    posterior_input: bool = setting(False, "continuous model: also read the closed-form per-token posterior "
                                           "p(token | x_t) (BFN's input)")

    def __post_init__(self):
        check_hparams(width=self.width, depth=self.depth, heads=self.heads, dropout=self.dropout, loops=self.loops,
                      positions=self.positions, embed_dim=self.embed_dim)
        if self.width % self.heads:
            raise ValueError(f"width={self.width} is not divisible by heads={self.heads}")
        if self.positions == "rotary" and (self.width // self.heads) % 2:
            raise ValueError(f"positions=rotary needs an even head size, got width/heads = {self.width // self.heads}")
        self._check({"output_prior": (lambda v: number(v) and v >= 0, "a finite number >= 0")})


def sinusoidal_features(x: torch.Tensor, dim: int, max_period: float = 1000.0) -> torch.Tensor:
    """[B] scalars → [B, dim] sin/cos features over geometric frequencies."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=x.device, dtype=torch.float32) / half)
    args = x.float()[:, None] * freqs[None]
    return torch.cat([torch.sin(args), torch.cos(args)], dim=-1)


def attribute_condition(layer: nn.Linear | None, attribute_rows: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    """[B, 1, width]: the summed embeddings of the multi-hot `attribute_rows` [B, A] (the
    attributes a text has; all zeros: unconditional), broadcast over the sequence; None without an
    attribute layer or rows."""
    if layer is None or attribute_rows is None:
        return None
    return layer(attribute_rows.to(dtype))[:, None, :]


class Block(nn.Module):
    """Pre-norm transformer block; with a conditioning vector its norms are modulated (adaLN)."""

    def __init__(self, width: int, heads: int, dropout: float, conditioned: bool):
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.norm1 = nn.LayerNorm(width, elementwise_affine=not conditioned)
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.norm2 = nn.LayerNorm(width, elementwise_affine=not conditioned)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width))
        self.modulation = None
        if conditioned:
            # scale/shift for both norms; zero init so training starts from an unmodulated block
            self.modulation = nn.Linear(width, 4 * width)
            nn.init.zeros_(self.modulation.weight)
            nn.init.zeros_(self.modulation.bias)

    def forward(self, h: torch.Tensor, cond: torch.Tensor | None, causal: bool,
                cache: "LayerCache | None" = None, where: "Positions | None" = None) -> torch.Tensor:
        """`where` carries the positional attention terms of this call (`Positions`)."""
        a = self.norm1(h)
        if self.modulation is not None:
            s1, b1, s2, b2 = self.modulation(cond).chunk(4, dim=-1)
            a = a * (1 + s1) + b1
        B, L, W = h.shape
        q, k, v = self.qkv(a).view(B, L, 3, self.heads, W // self.heads).permute(2, 0, 3, 1, 4)
        if where is not None and where.rotation is not None:
            q, k = rotate(q, where.rotation), rotate(k, where.rotation)  # new keys are cached rotated
        mask = None
        if cache is not None:
            # the new keys/values go into the preallocated buffers; attend over everything so far
            k, v, mask = cache.update(k, v, causal)
            causal = mask is None and causal and cache.offset == 0
        if where is not None and where.bias is not None:
            mask, causal = where.bias.to(q.dtype), False  # the bias already holds the causal mask
        att = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0, is_causal=causal
        )
        h = h + self.proj(att.transpose(1, 2).reshape(B, L, W))
        b = self.norm2(h)
        if self.modulation is not None:
            b = b * (1 + s2) + b2
        return h + F.dropout(self.mlp(b), self.dropout, self.training)


def rotate(x: torch.Tensor, rotation: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """Rotary embedding of queries or keys x [B, H, L, D] by (cos, sin) [L, D/2] (halves rotated)."""
    cos, sin = rotation
    x1, x2 = x.float().chunk(2, dim=-1)
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1).to(x.dtype)


def alibi_slopes(heads: int) -> torch.Tensor:
    """ALiBi's per-head slopes 2^(-8h/H), h = 1..H: 1/4, 1/16, ... for 4 heads."""
    return torch.tensor([2.0 ** (-8.0 * h / heads) for h in range(1, heads + 1)])


class Positions:
    """The positional terms one backbone call shares across its blocks: an additive attention
    bias [H, Lq, Lk] (ALiBi by distance, with the causal mask folded in) and/or rotary (cos, sin)
    for the queries' positions. Queries sit at positions start..start+Lq-1, keys at 0..start+Lq-1
    with a cache (else the queries' own), so cached decoding sees exactly what a full pass sees."""

    def __init__(self, kind: str, slopes: torch.Tensor, head_dim: int, start: int, length: int, causal: bool,
                 cached: bool, device: torch.device):
        self.bias = self.rotation = None
        q = torch.arange(start, start + length, device=device)
        if "alibi" in kind:
            k = torch.arange(0, start + length, device=device) if cached else q
            distance = (q[:, None] - k[None, :]).float()
            self.bias = -slopes.to(device)[:, None, None] * distance.abs()
            if causal:
                self.bias = self.bias.masked_fill(distance < 0, float("-inf"))
        if kind == "rotary":
            freqs = 10000.0 ** (-torch.arange(0, head_dim // 2, device=device, dtype=torch.float32) / (head_dim // 2))
            angles = q.float()[:, None] * freqs[None]
            self.rotation = (torch.cos(angles), torch.sin(angles))


class Backbone(nn.Module):
    """Positions (`POSITIONS`) + `depth` blocks + final norm, on hidden states [B, L, width].

    `loops` > 1 runs the stack that many times with the same weights (a looped transformer:
    Saunshi et al. 2025, Ouro), so the compute of depth x loops layers for the parameters of
    `depth`; each pass is a layer of its own for the key/value cache."""

    def __init__(self, network: NetworkConfig, max_len: int, conditioned: bool):
        super().__init__()
        check_hparams(seq_len=max_len)  # the config checked its own fields
        width, heads, positions = network.width, network.heads, network.positions
        self.loops, self.max_len, self.positions = network.loops, max_len, positions
        self.head_dim = width // heads
        self.position = nn.Parameter(torch.randn(max_len, width) * 0.02) if "learned" in positions else None
        # not saved: a function of `heads` (checkpoints stay as they were)
        self.register_buffer("slopes", alibi_slopes(heads), persistent=False)
        self.blocks = nn.ModuleList(Block(width, heads, network.dropout, conditioned) for _ in range(network.depth))
        self.norm = nn.LayerNorm(width)

    def forward(self, h: torch.Tensor, cond: torch.Tensor | None = None, causal: bool = False,
                cache: "KVCache | None" = None) -> torch.Tensor:
        """With a `cache`, h [B, L, width] holds the next L positions after the `cache.length`
        already seen; their keys/values are appended and the cache advances by L."""
        start = 0 if cache is None else cache.length
        if start + h.shape[1] > self.max_len:
            raise ValueError(f"positions {start}..{start + h.shape[1] - 1} exceed max_len={self.max_len}")
        if self.position is not None:
            h = h + self.position[start: start + h.shape[1]]
        where = None
        if self.positions != "learned":
            where = Positions(self.positions, self.slopes, self.head_dim, start, h.shape[1], causal,
                              cache is not None, h.device)
        for i, block in enumerate(list(self.blocks) * self.loops):
            h = block(h, cond, causal, None if cache is None else cache.layer(i), where)
        if cache is not None:
            cache.length += h.shape[1]
        return self.norm(h)


class LayerCache:
    """One block's view of a `KVCache`: writes the new keys/values at the cache's offset."""

    def __init__(self, cache: "KVCache", index: int):
        self.cache, self.index = cache, index

    @property
    def offset(self) -> int:
        return self.cache.length

    def update(self, k: torch.Tensor, v: torch.Tensor, causal: bool):
        """New k, v [B, H, L, D] → (all keys, all values [B, H, offset+L, D], attention mask or
        None). The mask is needed only for a causal chunk of L > 1 after earlier positions
        (SDPA's is_causal aligns to the top-left corner, which is wrong once L_q < L_k)."""
        K, V = self.cache.buffers(self.index, k)
        start, end = self.offset, self.offset + k.shape[2]
        K[:, :, start:end] = k
        V[:, :, start:end] = v
        mask = None
        if causal and start > 0 and k.shape[2] > 1:
            rows = torch.arange(start, end, device=k.device)[:, None]
            mask = rows >= torch.arange(end, device=k.device)[None, :]
        return K[:, :, :end], V[:, :, :end], mask


class KVCache:
    """Preallocated per-layer key/value buffers [B, heads, max_len, head_dim] for incremental
    causal decoding: `Backbone(h, causal=True, cache=c)` runs only the new positions. Buffers
    are allocated on first use with the keys' dtype and device (bf16 under autocast)."""

    def __init__(self, depth: int, max_len: int):
        self.depth, self.max_len, self.length = depth, max_len, 0
        self.k: list[torch.Tensor | None] = [None] * depth
        self.v: list[torch.Tensor | None] = [None] * depth

    def layer(self, index: int) -> LayerCache:
        return LayerCache(self, index)

    def buffers(self, index: int, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.k[index] is None:
            B, H, _, D = like.shape
            self.k[index] = like.new_empty(B, H, self.max_len, D)
            self.v[index] = like.new_empty(B, H, self.max_len, D)
        return self.k[index], self.v[index]


class TokenEmbedding(nn.Module):
    """E[V, d], rescaled to norm sqrt(d) per token (unit-variance coordinates) when `normalize`,
    so the SDE's log-SNR means the same thing for every token and the embeddings cannot shrink
    away from the noise."""

    def __init__(self, vocab_size: int, dim: int, normalize: bool = True):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(vocab_size, dim))
        self.normalize = normalize

    def table(self) -> torch.Tensor:
        if not self.normalize:
            return self.weight
        return F.normalize(self.weight, dim=-1) * math.sqrt(self.weight.shape[1])

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return F.embedding(ids, self.table())

    def nearest(self, x: torch.Tensor) -> torch.Tensor:
        """Ids of the nearest embeddings to vectors x [..., d]."""
        E = self.table()
        dist = (x * x).sum(-1, keepdim=True) - 2 * x @ E.T + (E * E).sum(-1)
        return dist.argmin(-1)


class ScoreNetwork(nn.Module):
    """Noisy embeddings x_t [B, L, d] at log-SNR λ [B] or per token [B, L] (+ the previous x0
    estimate for self-conditioning) → token logits [B, L, V] and x0 estimate [B, L, d].

    Per-token log-SNR lets some positions be given clean (λ = `CLEAN_LOG_SNR`): known tokens
    (anchors, committed tokens) that the rest of the sequence is generated around.

    With `interpolate`, x0 = softmax(logits / τ)·E ("score interpolation", CDCD/Plaid): the
    estimate stays in the span of the embeddings; otherwise a linear head predicts x0 directly.

    With `num_attributes`, multi-hot `attribute_rows` [B, A] (`cdlm.data.attributes`) add their summed
    embeddings to the time conditioning; all zeros (or None) is the unconditional model.

    With `posterior_input` the network also reads the closed-form per-token posterior p(w | x_t)
    (uniform prior; BFN's input): its expectation of a learned input table [V, width] is added to
    the input, one-hot's row when the token is clear, the mean row when it is noise, much as a
    masked model reads its tokens or the mask.

    With `output_prior` w > 0 the logits gain w · `prior_logits(x_t, λ)` (Plaid/LangFlow's skip
    logits): the exact posterior over tokens given x_t alone, so the network learns a correction
    to it instead of the whole answer. `forward(prior_weight=...)` overrides w (a training ramp).
    """

    def __init__(self, vocab_size: int, max_len: int, network: NetworkConfig, self_condition: bool = True,
                 num_attributes: int = 0):
        super().__init__()
        embed_dim, width = network.embed_dim, network.width
        self.output_prior = float(network.output_prior)  # a constant: compiled graphs specialise on it once
        self.embedding = TokenEmbedding(vocab_size, embed_dim, network.normalize_embeddings)
        self.attribute = nn.Linear(num_attributes, width, bias=False) if num_attributes else None
        self.interpolate, self.self_condition = network.interpolate, self_condition
        self.inp = nn.Linear(embed_dim * (2 if self_condition else 1), width)
        self.posterior_input = None
        if network.posterior_input:
            # at the scale of inp(x_t) (about 0.5 a coordinate), so neither input drowns the other
            self.posterior_input = nn.Parameter(torch.randn(vocab_size, width) * 0.5)
        self.time = nn.Sequential(nn.Linear(width, width), nn.SiLU(), nn.Linear(width, width))
        self.backbone = Backbone(network, max_len, conditioned=True)
        self.head = nn.Linear(width, vocab_size)
        self.x0_head = None if network.interpolate else nn.Linear(width, embed_dim)

    def forward(
        self,
        x_t: torch.Tensor,
        log_snr: torch.Tensor,
        x0_prev: torch.Tensor | None = None,
        temperature: float = 1.0,
        attribute_rows: torch.Tensor | None = None,
        prior_weight: float | torch.Tensor | None = None,
        return_x0: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(logits, x0). `return_x0=False` skips softmax·E and gives x0 None when `interpolate`
        (a caller that adjusts the logits first and derives x0 from them itself)."""
        if self.self_condition:
            x0_prev = torch.zeros_like(x_t) if x0_prev is None else x0_prev
            x_in = torch.cat([x_t, x0_prev], dim=-1)
        else:
            x_in = x_t
        per_sequence = log_snr.ndim == 1
        # log-SNR spans roughly [-10, 10]; scale it so the sinusoids resolve it. The features take
        # x_t's dtype: under --trainer.precision bf16-true the layers are bf16, the features float32
        cond = self.time(sinusoidal_features(log_snr.reshape(-1) * 50.0, self.inp.out_features).to(x_t.dtype))
        # [B, 1, width] broadcasts over the sequence; [B, L, width] gives each token its own level
        cond = cond.view(x_t.shape[0], 1 if per_sequence else x_t.shape[1], -1)
        extra = attribute_condition(self.attribute, attribute_rows, cond.dtype)
        if extra is not None:
            cond = cond + extra
        h = self.inp(x_in) + cond
        if self.posterior_input is not None:
            posterior = torch.softmax(self.prior_logits(x_t, log_snr), dim=-1)
            h = h + (posterior @ self.posterior_input.float()).to(h.dtype)
        h = self.backbone(h, cond)
        logits = self.head(h).float()
        if self.output_prior:
            weight = self.output_prior if prior_weight is None else prior_weight
            logits = logits + weight * self.prior_logits(x_t, log_snr)
        if self.interpolate:
            if not return_x0:
                return logits, None
            x0 = torch.softmax(logits / temperature, dim=-1) @ self.embedding.table().float()
        else:
            x0 = self.x0_head(h).float()
        return logits, x0.to(x_t.dtype)

    def prior_logits(self, x_t: torch.Tensor, log_snr: torch.Tensor) -> torch.Tensor:
        """c · x_t · Eᵀ [B, L, V] with c = α/σ² at log-SNR λ ([B] or [B, L]) of a VP SDE
        (α² = sigmoid(λ), σ² = sigmoid(-λ)): log N(x_t; α e_v, σ² I) up to terms equal for every
        token v when the embeddings have equal norms, so its softmax is the exact posterior
        p(v | x_t) under a uniform token prior. x_t enters the network unscaled, as the SDE made it."""
        lam = log_snr.float()
        c = torch.exp(F.softplus(lam) - 0.5 * F.softplus(-lam))  # log α - log σ² = -½ softplus(-λ) + softplus(λ)
        c = c.view(x_t.shape[0], 1, 1) if lam.ndim == 1 else c[..., None]
        return c * (x_t.float() @ self.embedding.table().float().T)


class PosteriorNetwork(nn.Module):
    """The best denoiser that ignores context: p(w | x_t) ∝ prior(w) · N(x_t; α e_w, σ² I) at each
    position on its own, for the embeddings of a `TokenEmbedding` and a log-prior [V] (e.g. the
    training unigram), with ScoreNetwork's call signature. What a network gains over it is what
    context buys (`cdlm.diagnostics`); for i.i.d. tokens from that prior it is the exact denoiser."""

    self_condition, interpolate, attribute = False, True, None  # what the samplers ask of a network

    def __init__(self, embedding: TokenEmbedding, log_prior: torch.Tensor):
        super().__init__()
        self.embedding = embedding
        self.register_buffer("log_prior", log_prior.float().log_softmax(-1))

    def forward(self, x_t: torch.Tensor, log_snr: torch.Tensor, x0_prev: torch.Tensor | None = None,
                temperature: float = 1.0, attribute_rows: torch.Tensor | None = None, prior_weight=None,
                return_x0: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
        lam = log_snr.double()
        alpha, var = torch.sigmoid(lam).sqrt(), torch.sigmoid(-lam)  # VP: α² = sigmoid(λ), σ² = sigmoid(-λ)
        alpha, var = (alpha.view(-1, 1, 1), var.view(-1, 1, 1)) if lam.ndim == 1 else (alpha[..., None], var[..., None])
        E = self.embedding.table().double()
        # log N(x_t; α e, σ²) up to terms equal for every token: (α x·e - α²|e|²/2) / σ²
        log_lik = (alpha * (x_t.double() @ E.T) - 0.5 * alpha**2 * (E * E).sum(-1)) / var
        logits = (log_lik + self.log_prior.double()).float()
        if not return_x0:
            return logits, None
        x0 = torch.softmax(logits / temperature, dim=-1) @ E.float()
        return logits, x0.to(x_t.dtype)


class MaskedNetwork(nn.Module):
    """Partly masked ids z [B, L] → logits [B, L, V] of the clean token at every position.

    The id `mask_id` = V (one past the tokenizer's vocabulary) marks a masked position. There is
    no time input: in absorbing diffusion the masked positions themselves say how much is left
    (MDLM: time conditioning is unnecessary). The head never predicts the mask token (SUBS: its
    logit is -inf by construction); embeddings are tied as in `CausalLM`.

    With `num_attributes`, multi-hot `attribute_rows` [B, A] condition every block (adaLN) as in
    `ScoreNetwork`; all zeros (or None) is the unconditional model.
    """

    def __init__(self, vocab_size: int, max_len: int, network: NetworkConfig, num_attributes: int = 0):
        super().__init__()
        self.vocab_size, self.mask_id = vocab_size, vocab_size
        self.embedding = nn.Embedding(vocab_size + 1, network.width)
        nn.init.normal_(self.embedding.weight, std=0.02)
        self.attribute = nn.Linear(num_attributes, network.width, bias=False) if num_attributes else None
        self.backbone = Backbone(network, max_len, conditioned=num_attributes > 0)

    def forward(self, z: torch.Tensor, attribute_rows: torch.Tensor | None = None) -> torch.Tensor:
        h = self.embedding(z)
        cond = attribute_condition(self.attribute, attribute_rows, h.dtype)
        if self.attribute is not None and cond is None:
            cond = h.new_zeros(h.shape[0], 1, h.shape[2])  # the unconditional model
        h = self.backbone(h if cond is None else h + cond, cond)
        return (h @ self.embedding.weight[: self.vocab_size].T).float()


class NoisyAttributeClassifier(nn.Module):
    """Noisy embeddings x_t [B, L, d] at log-SNR λ [B] → attribute logits [B, A] (independent
    yes/no per attribute): the classifier whose gradient guides sampling (Diffusion-LM's
    plug-and-play control)."""

    def __init__(self, embed_dim: int, num_attributes: int, width: int, depth: int, heads: int, max_len: int):
        super().__init__()
        self.inp = nn.Linear(embed_dim, width)
        self.time = nn.Sequential(nn.Linear(width, width), nn.SiLU(), nn.Linear(width, width))
        self.backbone = Backbone(NetworkConfig(width=width, depth=depth, heads=heads), max_len, conditioned=True)
        self.head = nn.Linear(width, num_attributes)

    def forward(self, x_t: torch.Tensor, log_snr: torch.Tensor) -> torch.Tensor:
        cond = self.time(sinusoidal_features(log_snr.reshape(-1) * 50.0, self.inp.out_features).to(x_t.dtype))[:, None, :]
        h = self.backbone(self.inp(x_t) + cond, cond)
        return self.head(h.mean(1)).float()


class CausalLM(nn.Module):
    """The autoregressive baseline: the same backbone with a causal mask, tied embeddings."""

    def __init__(self, vocab_size: int, max_len: int, network: NetworkConfig):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, network.width)
        nn.init.normal_(self.embedding.weight, std=0.02)
        self.backbone = Backbone(network, max_len, conditioned=False)

    def new_cache(self) -> KVCache:
        """An empty `KVCache` for `forward(ids, cache=...)`, sized for the longest sequence."""
        return KVCache(len(self.backbone.blocks) * self.backbone.loops, self.backbone.max_len)

    def forward(self, ids: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        """Logits [B, L, V]; with a `cache`, ids are the next L tokens after those already in it."""
        h = self.backbone(self.embedding(ids), causal=True, cache=cache)
        return (h @ self.embedding.weight.T).float()
