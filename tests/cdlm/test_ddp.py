"""More than one process on Lightning's engine: `cdlm fit --trainer.strategy=ddp` on two CPU processes
trains the same model as one process with the same global batch."""

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from lightning.pytorch.callbacks import Callback

ROOT = Path(__file__).resolve().parents[2]


class LossLog(Callback):
    """Appends `step loss batch_size` of every training step to `PATH.rankN` (a test helper:
    Lightning logs rank 0's loss alone, and the curve of the global batch is the ranks' mean)."""

    def __init__(self, path: str):
        self.path = path

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        with open(f"{self.path}.rank{trainer.global_rank}", "a") as f:
            f.write(f"{trainer.global_step} {float(loss):.10g} {len(batch[0])}\n")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _fit(folder: Path, text: Path, devices: int, batch_size: int, port: int) -> subprocess.Popen:
    args = [
        sys.executable, "-m", "cdlm.cli", "fit", "--seed_everything=0", "--model=cdlm.AutoregressiveLM",
        f"--data.dataset={text}", "--data.packing=true", "--data.tokenizer=char", "--data.seq_len=16",
        f"--data.batch_size={batch_size}", f"--data.loading.cache_dir={folder.parent / 'tokens'}",
        "--model.network.width=32", "--model.network.depth=1", "--model.network.heads=2", "--model.network.dropout=0", "--model.val_samples=0",
        "--model.optim.warmup_steps=2", "--trainer.max_steps=20", "--trainer.limit_val_batches=0",
        "--trainer.accelerator=cpu", f"--trainer.devices={devices}",
        "--trainer.strategy=ddp", "--trainer.logger=false",
        "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false",
        f"--trainer.default_root_dir={folder}",
        "--trainer.callbacks+=lightning.pytorch.callbacks.ModelCheckpoint", f"--trainer.callbacks.dirpath={folder}/ckpt",
        "--trainer.callbacks.save_last=true",
        "--trainer.callbacks+=tests.cdlm.test_ddp.LossLog", f"--trainer.callbacks.path={folder}/loss",
    ]
    # each run its own rendezvous port: two runs started at once would otherwise draw the same free one
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), "HF_DATASETS_CACHE": str(folder / "hf"),
           "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
           "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    return subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _losses(path: Path) -> dict[int, tuple[float, int]]:
    rows = [line.split() for line in path.read_text().splitlines()]
    return {int(step): (float(loss), int(n)) for step, loss, n in rows}


def test_ddp_on_two_processes_follows_the_single_process_loss_curve(tmp_path):
    """Two `ddp` processes with 8 windows each follow one process with 16, step by step.

    For the curves to be equal: the same initial weights (`seed_everything`; DDP also broadcasts
    rank 0's), the same seed for the epoch order on every rank (the data module broadcasts
    rank 0's) and in both runs (it is drawn from the global RNG when the loader is built, and
    Lightning's DDP reseeds that RNG when it sets up, so the one process runs `ddp` on one device
    to draw the same) and a sampler that gives each rank a disjoint share of the same order (`EpochShuffle`,
    kept by Lightning rather than wrapped), so that step by step the union of the ranks' batches
    is the single process's batch; packed windows, so that every token counts and the mean of the
    ranks' mean losses (DDP averages their gradients) is the loss of the whole batch; and no
    randomness in a step. The diffusion models draw times and noise in every step, per rank, from
    each rank's own RNG: their curves match in distribution only, so the exact test is the
    autoregressive model's (no dropout), which is a function of the data alone."""
    text = tmp_path / "book.txt"
    words = ["anna", "likes", "tea", "and", "bread", "soup", "by", "the", "river", "."]
    rng = torch.Generator().manual_seed(0)
    text.write_text("\n".join(" ".join(words[i] for i in torch.randint(0, 10, (12,), generator=rng).tolist())
                              for _ in range(600)))
    ports = [_free_port(), _free_port()]
    while ports[1] == ports[0]:
        ports[1] = _free_port()
    single = _fit(tmp_path / "single", text, devices=1, batch_size=16, port=ports[0])
    ddp = _fit(tmp_path / "ddp", text, devices=2, batch_size=8, port=ports[1])
    for proc in (single, ddp):
        _, err = proc.communicate(timeout=240)
        assert proc.returncode == 0, err[-3000:]

    one = _losses(tmp_path / "single/loss.rank0")
    ranks = [_losses(tmp_path / f"ddp/loss.rank{r}") for r in (0, 1)]
    assert sorted(one) == sorted(ranks[0]) == sorted(ranks[1]) == list(range(1, 21))
    for step in one:
        assert one[step][1] == 16 and ranks[0][step][1] == ranks[1][step][1] == 8
        mean = (ranks[0][step][0] + ranks[1][step][0]) / 2
        assert mean == pytest.approx(one[step][0], rel=1e-4, abs=1e-5), step
        assert ranks[0][step][0] != ranks[1][step][0]  # the ranks saw different windows
    assert one[20][0] < one[1][0]  # and it learned

    a = torch.load(tmp_path / "single/ckpt/last.ckpt", weights_only=True)
    b = torch.load(tmp_path / "ddp/ckpt/last.ckpt", weights_only=True)
    assert a["global_step"] == b["global_step"] == 20
    for name, weight in a["state_dict"].items():
        other = b["state_dict"][name]
        if name.endswith("qkv.bias"):  # [query; key; value]: the key bias has no gradient (softmax is
            # shift invariant), so Adam divides rounding noise by its own size and steps lr-sized at random
            width = len(weight) // 3
            weight, other = torch.cat([weight[:width], weight[2 * width:]]), torch.cat([other[:width], other[2 * width:]])
        assert torch.allclose(weight, other, rtol=0, atol=1e-6), name
