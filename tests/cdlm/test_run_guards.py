"""Training loses nothing: exact resume after SIGKILL, the last step saved after every kind of stop,
signals exit non-zero, numerical faults stop with one line, and nothing is overwritten by surprise."""

import signal
import subprocess
import sys
import time

import pytest
import torch

from cdlm.cli import main
from tests.cdlm.conftest import TINY, fails

# a run that draws from every RNG stream a step uses: warped times, dropout, self-conditioning,
# clean context, validation with sampling in between
EXERCISED = [*TINY, "--seed_everything=0", "--model.training.time_sampling=warped", "--model.network.dropout=0.1",
             "--model.training.clean_context=0.2", "--trainer.val_check_interval=15", "--trainer.check_val_every_n_epoch=null",
             "--trainer.logger=false"]


def fit_args(folder, *extra, every=10):
    return ["fit", *EXERCISED, f"--trainer.default_root_dir={folder}",
            "--trainer.callbacks+=lightning.pytorch.callbacks.ModelCheckpoint", f"--trainer.callbacks.dirpath={folder}/ckpt",
            f"--trainer.callbacks.every_n_train_steps={every}", "--trainer.callbacks.save_last=true", *extra]


def start(folder, *extra, every=10):
    return subprocess.Popen([sys.executable, "-m", "cdlm.cli", *fit_args(folder, *extra, every=every)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def wait_for(path, proc, timeout=120):
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, proc.stderr.read()
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.02)


def load(path):
    return torch.load(path, weights_only=True)


def assert_same_tensors(a, b, where=""):
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            assert_same_tensors(a[k], b[k], f"{where}/{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same_tensors(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


@pytest.mark.slow
def test_kill_resume_is_bitwise_the_uninterrupted_run(tmp_path):
    # 400 examples in batches of 16: 25 steps an epoch, so 60 steps cross two epoch boundaries
    whole = start(tmp_path / "whole", "--trainer.max_steps=60")
    killed = start(tmp_path / "killed", "--trainer.max_steps=60")
    wait_for(tmp_path / "killed/ckpt/epoch=0-step=20.ckpt", killed)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    assert whole.wait() == 0, whole.stderr.read()
    resumed_from = load(tmp_path / "killed/ckpt/last.ckpt")["global_step"]  # 10 if killed between the two saves of step 20
    assert resumed_from in (10, 20, 30, 40, 50)
    resume = subprocess.run([sys.executable, "-m", "cdlm.cli", *fit_args(tmp_path / "killed", "--trainer.max_steps=60",
                             "--ckpt_path", str(tmp_path / "killed/ckpt/last.ckpt"))], capture_output=True, text=True)
    assert resume.returncode == 0, resume.stderr
    a, b = load(tmp_path / "whole/ckpt/last.ckpt"), load(tmp_path / "killed/ckpt/last.ckpt")
    assert a["global_step"] == b["global_step"] == 60
    # network, EMA, time-warp curve, optimizer moments, schedule, and the guards' own state
    for key in ("state_dict", "optimizer_states", "lr_schedulers"):
        assert_same_tensors(a[key], b[key], key)
    assert any(k.startswith("ema.") for k in a["state_dict"]) and "time_warp.curve" in a["state_dict"]
    assert_same_tensors({k: v for k, v in a["callbacks"].items() if "ModelCheckpoint" not in k},
                        {k: v for k, v in b["callbacks"].items() if "ModelCheckpoint" not in k}, "callbacks")


@pytest.mark.slow
@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)], ids=["SIGTERM", "SIGINT"])
def test_a_signal_saves_the_last_step_and_exits_non_zero(tmp_path, sig, code):
    proc = start(tmp_path, "--trainer.max_steps=100000")
    wait_for(tmp_path / "ckpt/epoch=0-step=10.ckpt", proc)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err
    stopped = [line for line in err.splitlines() if line.startswith(f"cdlm: stopped by {sig.name} at step")]
    assert len(stopped) == 1, err
    step = int(stopped[0].split("at step ")[1].split(";")[0])
    assert load(tmp_path / "ckpt/last.ckpt")["global_step"] == step >= 10
    assert not list((tmp_path / "ckpt").glob("*.tmp"))



@pytest.fixture
def final_steps(monkeypatch):
    from cdlm.run_guards import SaveOnStop

    seen = []
    original = SaveOnStop.on_train_end

    def record(self, trainer, pl_module):
        seen.append(trainer.global_step)
        original(self, trainer, pl_module)

    monkeypatch.setattr(SaveOnStop, "on_train_end", record)
    return seen


def test_max_steps_off_the_interval_saves_the_tail(tmp_path):
    main(fit_args(tmp_path, "--trainer.max_steps=33"))
    assert load(tmp_path / "ckpt/last.ckpt")["global_step"] == 33


def test_max_time_saves_the_final_step(tmp_path, final_steps):
    main(fit_args(tmp_path, "--trainer.max_steps=-1", "--trainer.max_time=00:00:00:04", every=7))
    assert final_steps and final_steps[0] > 0
    assert load(tmp_path / "ckpt/last.ckpt")["global_step"] == final_steps[0]


def test_a_nan_loss_stops_with_one_line_and_writes_nothing(tmp_path, capsys, monkeypatch):
    from cdlm.models.diffusion import DiffusionLM

    main(fit_args(tmp_path, "--trainer.max_steps=10"))
    good = (tmp_path / "ckpt/last.ckpt").read_bytes()
    original = DiffusionLM._loss

    def nan_after(self, batch, stage):
        loss = original(self, batch, stage)
        return loss * float("nan") if stage == "train" and self.global_step >= 11 else loss

    monkeypatch.setattr(DiffusionLM, "_loss", nan_after)
    message = fails(capsys, *fit_args(tmp_path, "--trainer.max_steps=40", "--ckpt_path", str(tmp_path / "ckpt/last.ckpt")))
    assert "loss is nan at step 12" in message
    assert (tmp_path / "ckpt/last.ckpt").read_bytes() == good
    assert sorted(p.name for p in (tmp_path / "ckpt").glob("*.ckpt")) == ["epoch=0-step=10.ckpt", "last.ckpt"]


def test_a_diverging_loss_stops_non_zero(tmp_path, capsys, monkeypatch):
    from cdlm.models.diffusion import DiffusionLM

    original = DiffusionLM._loss

    def blow_up(self, batch, stage):
        loss = original(self, batch, stage)
        return loss * 1e4 if stage == "train" and self.global_step >= 25 else loss

    monkeypatch.setattr(DiffusionLM, "_loss", blow_up)
    message = fails(capsys, *fit_args(tmp_path, "--trainer.max_steps=60"))
    assert "diverged at step 26" in message
    assert load(tmp_path / "ckpt/last.ckpt")["global_step"] == 20


def test_non_finite_weights_are_never_written(tmp_path):
    from cdlm.checkpoints import AtomicCheckpointIO

    target = tmp_path / "last.ckpt"
    target.write_bytes(b"good")
    with pytest.raises(FloatingPointError, match="net.w"):
        AtomicCheckpointIO().save_checkpoint({"state_dict": {"net.w": torch.tensor([1.0, float("inf")])}}, target)
    assert target.read_bytes() == b"good" and not list(tmp_path.glob("*.tmp"))


def test_a_killed_save_leaves_no_temporary_file_behind(tmp_path):
    from cdlm.checkpoints import AtomicCheckpointIO

    stale = tmp_path / ".last.ckpt.abc123.tmp"  # what a save killed outright leaves
    stale.write_bytes(b"half")
    AtomicCheckpointIO().save_checkpoint({"state_dict": {"w": torch.ones(2)}}, tmp_path / "last.ckpt")
    assert not stale.exists() and load(tmp_path / "last.ckpt")["state_dict"]["w"].sum() == 2


def test_a_rerun_into_a_used_folder_refuses_unless_overwrite(tmp_path, capsys):
    main(fit_args(tmp_path, "--trainer.max_steps=20"))
    before = (tmp_path / "ckpt/last.ckpt").read_bytes()
    assert "already holds another run's checkpoints" in fails(capsys, *fit_args(tmp_path, "--trainer.max_steps=5"))
    assert (tmp_path / "ckpt/last.ckpt").read_bytes() == before
    main(fit_args(tmp_path, "--trainer.max_steps=5", "--overwrite=true"))
    assert sorted(p.name for p in (tmp_path / "ckpt").glob("*.ckpt")) == ["last.ckpt"]
    assert load(tmp_path / "ckpt/last.ckpt")["global_step"] == 5


def test_the_resolved_config_never_replaces_the_users(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = tmp_path / "config.yaml"
    config.write_text("# my settings\ntrainer:\n  max_steps: 3\n")
    main([*fit_args(tmp_path / "run"), f"--config={config}"])
    assert config.read_text() == "# my settings\ntrainer:\n  max_steps: 3\n"
    assert "max_steps: 3" in (tmp_path / "run/ckpt/config.yaml").read_text()


def test_resume_applies_changed_hyperparameters_and_says_so(tmp_path):
    main(fit_args(tmp_path, "--trainer.max_steps=20"))
    with pytest.warns(UserWarning, match=r"now in force: optim.lr 0.002 → 0.1"):
        main(fit_args(tmp_path, "--trainer.max_steps=25", "--model.optim.lr=0.1", "--ckpt_path", str(tmp_path / "ckpt/last.ckpt")))
    groups = load(tmp_path / "ckpt/last.ckpt")["optimizer_states"][0]["param_groups"]
    assert all(g["initial_lr"] == 0.1 for g in groups)


def test_resume_on_other_text_refuses(tmp_path, tiny_ckpt, capsys):
    text = tmp_path / "other.txt"
    text.write_text("\n".join(f"line number {i} of another text" for i in range(200)))
    message = fails(capsys, *fit_args(tmp_path, f"--data.dataset={text}", "--trainer.max_steps=40",
                                      "--ckpt_path", str(tiny_ckpt)))
    assert "tokenizer differs" in message


def test_resume_with_another_architecture_names_the_change(tmp_path, tiny_ckpt, capsys):
    message = fails(capsys, *fit_args(tmp_path, "--model.network.width=48", "--trainer.max_steps=40", "--ckpt_path", str(tiny_ckpt)))
    assert "cannot resume" in message and "width 32 → 48" in message


def test_end_within_budget_stops_when_the_time_left_is_a_validation():
    from types import SimpleNamespace

    from lightning.pytorch.callbacks import Timer

    from cdlm.run_guards import EndWithinBudget

    timer = Timer(duration={"seconds": 100})
    left = {"s": 50.0}
    timer.time_remaining = lambda stage="train": left["s"]
    trainer = SimpleNamespace(callbacks=[timer], should_stop=False, sanity_checking=False)
    guard = EndWithinBudget(margin=1.25)
    guard.on_train_batch_end(trainer, None, None, None, 0)
    assert not trainer.should_stop  # no validation measured yet
    guard.last_validation_s = 30.0
    guard.on_train_batch_end(trainer, None, None, None, 0)
    assert not trainer.should_stop  # 50 s left > 1.25 x 30 s
    left["s"] = 37.0
    guard.on_train_batch_end(trainer, None, None, None, 0)
    assert trainer.should_stop
    free = SimpleNamespace(callbacks=[], should_stop=False)
    guard.on_train_batch_end(free, None, None, None, 0)
    assert not free.should_stop  # no max_time: no effect
