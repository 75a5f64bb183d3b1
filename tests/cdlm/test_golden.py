"""No behaviour change: a tiny committed checkpoint samples exactly the ids it sampled when it was
recorded (tests/data/golden_diffusion.json), for fixed seeds with several methods and controls."""

import json
from pathlib import Path

import pytest
import torch

from cdlm.checkpoints import load_checkpoint

DATA = Path(__file__).resolve().parents[1] / "data"
GOLDEN = json.loads((DATA / "golden_diffusion.json").read_text())


@pytest.fixture(scope="module")
def model():
    return load_checkpoint(str(DATA / "golden_diffusion.ckpt"))[0]


@pytest.mark.parametrize("case", sorted(GOLDEN["cases"]))
def test_golden_samples_are_unchanged(model, case):
    options = dict(GOLDEN["cases"][case])
    if "anchors" in options:
        options["anchors"] = {int(k): v for k, v in options["anchors"].items()}
    for seed, expected in GOLDEN["ids"][case].items():
        assert torch.equal(model.sample_ids(3, seed=int(seed), **options).ids, torch.tensor(expected)), (case, seed)
