"""`cdlm --help` explains every command at once; `lab` dispatches lazily; `predict` is gone;
`sample` and `eval` show a progress bar on a terminal only."""

import io
import subprocess
import sys
import time

import pytest
import torch

from cdlm.cli import COMMANDS, main
from tests.cdlm.conftest import fails


def test_help_lists_every_command_in_order_one_line_each_fast():
    code = ("import sys, time; t = time.perf_counter(); from cdlm.cli import main; main(['--help']); "
            "print(time.perf_counter() - t, 'lightning' in sys.modules, 'torch' in sys.modules)")
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    wall = time.perf_counter() - start
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    listed = [line.split()[0] for line in lines if line.startswith("  ") and line.split()]
    assert listed == ["sample", "eval", "diagnose", "export", "lab", "fit", "validate", "test"]
    for name, line in COMMANDS:
        assert sum(row.startswith(f"  {name} ") for row in lines) == 1 and len(line) > 20
    assert "predict" not in proc.stdout
    seconds, lightning, torch = proc.stdout.split()[-3:]
    assert (lightning, torch) == ("False", "False")  # nothing heavy is imported for help
    assert float(seconds) < 0.5 and wall < 2.0, (seconds, wall)


def test_predict_is_not_a_command_and_says_what_to_use(capsys):
    err = fails(capsys, "predict", "--config", "configs/quickstart.yaml")
    assert "cdlm sample --output" in err
    assert "unknown command 'fitt'" in fails(capsys, "fitt")
    from cdlm.lightning_cli import CDLMCLI

    assert set(CDLMCLI.subcommands()) == {"fit", "validate", "test"}


def test_lab_dispatches_the_arguments_after_it(monkeypatch):
    import cdlm.lab

    seen = []
    monkeypatch.setattr(cdlm.lab, "main", lambda argv: seen.append(argv))
    main(["lab", "reversal", "--steps", "3"])
    assert seen == [["reversal", "--steps", "3"]]


def test_lab_help_is_the_lab_parser(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["lab", "--help"])
    assert exc.value.code in (0, None)
    out = capsys.readouterr().out
    assert out.startswith("usage: cdlm lab") and "reversal" in out


class _Terminal(io.StringIO):
    def isatty(self):
        return True


@pytest.mark.parametrize("settings", [{"steps": 4}, {"steps": 3, "restarts": 2, "restart_steps": 2, "method": "heun"},
                                      {"steps": 3, "restarts": 1, "restart_steps": 2, "self_condition_scale": 1.5}],
                         ids=["ddim", "heun+restarts", "self-conditioning guidance"])
def test_progress_total_is_the_exact_number_of_calls(tiny_ckpt, settings):
    from cdlm.checkpoints import load_checkpoint
    from cdlm.progress import network_calls, sampling_calls

    model, _ = load_checkpoint(str(tiny_ckpt))
    total = sampling_calls(model, 5, 2, settings)  # three chunks
    terminal = _Terminal()
    with network_calls(model, "sampling", total, stream=terminal, delay=0, mininterval=0) as bar:  # draw every call
        gen = model.sample_ids(5, seed=0, batch_size=2, **settings)
    assert bar is not None and bar.n == total == 3 * gen.nfe
    assert "sampling" in terminal.getvalue() and f"{total}/{total}" in terminal.getvalue()  # drawn
    assert torch.equal(gen.ids, model.sample_ids(5, seed=0, batch_size=2, **settings).ids)  # and nothing changed


def test_progress_is_hidden_off_a_terminal(tiny_ckpt, capsys):
    from cdlm.checkpoints import load_checkpoint
    from cdlm.progress import network_calls

    model, _ = load_checkpoint(str(tiny_ckpt))
    with network_calls(model, "sampling", 10, stream=io.StringIO()) as bar:
        model.sample_ids(2, seed=0, steps=2)
    assert bar is None
    main(["sample", "--ckpt_path", str(tiny_ckpt), "--num_samples", "2", "--steps", "2"])
    assert capsys.readouterr().err == ""  # pytest's stderr is no terminal: no bar


def test_progress_bounds_for_masked_and_autoregressive(tiny_ar_ckpt):
    from cdlm.checkpoints import load_checkpoint
    from cdlm.progress import sampling_calls

    ar, _ = load_checkpoint(str(tiny_ar_ckpt))
    seq_len = ar.hparams.seq_len
    assert sampling_calls(ar, 10, 4, {}) == 3 * seq_len
    from cdlm.data.tokenizer import encode

    assert len(encode(ar.tokenizer, "the food")) == 2
    assert sampling_calls(ar, 10, 4, {}, prefix="the food") == 3 * (seq_len - 2)
    assert ar.nll_calls(5) == 5


@pytest.mark.slow
def test_the_quickstart_first_screen_has_no_warnings(tmp_path):
    """What `cdlm fit --config configs/quickstart.yaml` prints before training: no deprecation
    warning, no advertisement, no shared logger/checkpoint folder."""
    import os
    from pathlib import Path

    config = Path(__file__).resolve().parents[2] / "configs" / "quickstart.yaml"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="default")  # every warning shown, as for a user
    proc = subprocess.run([sys.executable, "-m", "cdlm.cli", "fit", f"--config={config}", "--trainer.max_steps=2",
                           "--data.num_examples=2000", "--trainer.enable_progress_bar=false"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    screen = proc.stdout + proc.stderr
    assert proc.returncode == 0, screen
    for unwanted in ("Warning", "warn", "deprecated", "Tip", "litlogger", "exists and is not empty"):
        assert unwanted not in screen, screen
    assert (tmp_path / "runs" / "quickstart" / "checkpoints" / "last.ckpt").is_file()
    saved = tmp_path / "runs" / "quickstart" / "version_0" / "config.yaml"
    assert "name: quickstart" in saved.read_text()  # resuming from the saved config keeps the run's folders


@pytest.mark.parametrize("module", ["cdlm.control.attributes", "cdlm.control.constraints", "cdlm.data.corpus",
                                    "cdlm.models.config", "cdlm.sampling.settings"])
def test_a_module_imports_on_its_own(module):
    """No import cycle depends on what was imported first (cdlm.control and cdlm.data import each other's modules)."""
    proc = subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr.strip().splitlines()[-1:]
