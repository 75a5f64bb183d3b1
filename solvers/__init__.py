"""solvers: a score-based SDE toolkit that works on any tensor shape [B, ...].

SDEs and schedules (`VPSDE`, `LogLinearVPSDE`, ...), prediction conversions (x0/eps/v/score),
time grids, probability-flow ODE and reverse-SDE samplers behind one `sample()` call,
adapters to torchdiffeq / torchsde / scipy, and likelihoods. It never imports `cdlm`.
"""
from .core import NonFiniteError, StepInfo
from .grids import GRIDS, make_grid
from .likelihood import log_likelihood
from .parameterization import (
                               PREDICTIONS,
                               as_x0_denoiser,
                               convert,
                               eps_to_x0,
                               score_to_x0,
                               v_to_x0,
                               x0_to_eps,
                               x0_to_score,
                               x0_to_v,
)
from .sampling import SampleResult, available, method_info, sample
from .sde import (
                               SDE,
                               SDES,
                               VESDE,
                               VPSDE,
                               LogLinearVPSDE,
                               NoiseScaledVPSDE,
                               SubVPSDE,
                               VPCosineSDE,
                               VPFamilySDE,
                               VPSqrtSDE,
                               append_dims,
                               sde_from_name,
)

__all__ = [
    "SDE", "VPFamilySDE", "VPSDE", "VPCosineSDE", "VPSqrtSDE", "SubVPSDE", "VESDE", "LogLinearVPSDE", "NoiseScaledVPSDE", "SDES", "sde_from_name",
    "append_dims", "PREDICTIONS", "x0_to_eps", "eps_to_x0", "x0_to_score", "score_to_x0", "x0_to_v", "v_to_x0",
    "convert", "as_x0_denoiser", "GRIDS", "make_grid", "sample", "available", "method_info", "SampleResult",
    "StepInfo", "NonFiniteError", "log_likelihood",
]
