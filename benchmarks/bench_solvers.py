"""Benchmark the samplers on the analytic Gaussian target (exact answers known).

ODE methods: relative error of x against the exact probability-flow map.
SDE methods: RMS over dimensions of the sample mean's error (in units of the marginal std) and
of the sample std's relative error; with B samples the noise floor is 1/sqrt(B) and 1/sqrt(2B).

    python benchmarks/bench_solvers.py
    python benchmarks/bench_solvers.py --steps 10 20 40 --shape 64 32 16 --dtype float32 --methods ddim dpmpp_2m
    python benchmarks/bench_solvers.py --sde vp --shape 4 3 --methods dpmpp_2m unipc_bh2 --grids default log_snr
"""
from __future__ import annotations

import argparse
import time

import torch

import solvers
from solvers.analytic import GaussianTarget, relative_error

DEFAULT_METHODS = ["euler", "ddim", "heun", "dpmpp_2m", "dpmpp_3m", "unipc_bh1", "unipc_bh2", "unipc3_bh2", "deis_2", "deis_3",
                   "dpm_adaptive", "torchdiffeq:rk4",
                   "torchdiffeq:dopri5", "scipy:RK45", "euler_maruyama", "ancestral", "pc", "dpmpp_2m_sde"]
ADAPTIVE_STEPS = [None]  # adaptive methods run once, at their default tolerances


def run(method: str, sde, target: GaussianTarget, x_T: torch.Tensor, steps: int, grid: str | None = None) -> dict:
    start = time.perf_counter()
    res = solvers.sample(target.denoiser(sde), sde, x_T, method=method, steps=steps, grid=grid,
                         generator=torch.Generator().manual_seed(0))
    wall = time.perf_counter() - start
    row = {"steps": res.steps if res.steps is not None else "-", "nfe": res.nfe, "wall_s": wall}
    if solvers.method_info(method)["kind"] == "ode":
        row["error"] = relative_error(res.x, target.exact_map(sde, x_T, 1.0, sde.t_min_default))
    else:
        m, sd = target.marginal(sde, sde.t_min_default, x_T)
        x = res.x.double()
        row["mean_err"] = ((x.mean(0) - m) / sd).pow(2).mean().sqrt().item()
        row["std_err"] = (x.std(0) / sd - 1).pow(2).mean().sqrt().item()
    return row


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, nargs="+", default=[10, 20, 40, 80])
    p.add_argument("--shape", type=int, nargs="+", default=[2048, 8], help="batch first: B ...")
    p.add_argument("--dtype", choices=["float32", "float64"], default="float64")
    p.add_argument("--methods", nargs="+", default=DEFAULT_METHODS, help=f"any of {solvers.available()}")
    p.add_argument("--sde", default="loglinear", choices=list(solvers.SDES))
    p.add_argument("--grids", nargs="+", default=["default"],
                   help=f"'default' (each method's own) and/or any of {list(solvers.GRIDS)}; fixed-grid methods only")
    args = p.parse_args(argv)
    for m in args.methods:
        try:
            solvers.method_info(m)  # fail early on a bad name, listing what exists
        except ValueError as e:
            p.error(str(e))

    sde = solvers.sde_from_name(args.sde)
    dtype = getattr(torch, args.dtype)
    target = GaussianTarget.random(args.shape[1:], dtype=dtype)
    x_T = sde.prior_sample(args.shape, generator=torch.Generator().manual_seed(1), dtype=dtype)
    B = args.shape[0]
    print(f"{sde!r}, x_T {tuple(x_T.shape)} {args.dtype}. SDE noise floor: mean_err {B ** -0.5:.3f}, "
          f"std_err {(2 * B) ** -0.5:.3f}")
    for method in args.methods:
        info = solvers.method_info(method)
        cols = ["error"] if info["kind"] == "ode" else ["mean_err", "std_err"]
        print(f"\n{method} ({info['kind']})\n{'steps':>6} {'nfe':>6} " + " ".join(f"{c:>10}" for c in cols)
              + f" {'wall_s':>8}")
        grids = args.grids if info["default_grid"] is not None else ["default"]
        for grid in grids:
            if len(grids) > 1 or grid != "default":
                shown = solvers.grids.resolve_default(info["default_grid"], sde) if grid == "default" else grid
                print(f"  grid: {grid}" + (f" ({shown})" if grid == "default" else ""))
            for steps in (ADAPTIVE_STEPS if info["adaptive"] else args.steps):
                row = run(method, sde, target, x_T, steps or 50, None if grid == "default" else grid)
                print(f"{row['steps']:>6} {row['nfe']:>6} " + " ".join(f"{row[c]:>10.2e}" for c in cols)
                      + f" {row['wall_s']:>8.3f}")


if __name__ == "__main__":
    main()
