"""Bad input to `cdlm fit`, `sample` and `eval`: every case ends in one line on stderr naming the
bad value, a non-zero exit, no traceback, and no existing file changed.

`CASES` lists them; `RESULTS` collects (input, message, exit code) as they run, printed as a
Markdown table at the end of the module (visible with `pytest -s`).
"""

import hashlib
import os
import subprocess
import sys

import pytest
import torch

from cdlm.cli import main
from tests.cdlm.conftest import TINY

# placeholders, filled in by `files`: {ckpt} {ar} a real diffusion / autoregressive checkpoint,
# {dir} an empty folder, {bin} non-UTF-8 bytes, {yaml} malformed YAML, {trunc} half a checkpoint,
# {shapes} / {missing} a checkpoint with a tensor of the wrong shape / without a tensor,
# {old} an existing file, {tmp} the test's folder
SAMPLE = ("sample", "--ckpt_path", "{ckpt}", "--steps", "2", "--num_samples", "2")
EVAL = ("eval", "--ckpt_path", "{ckpt}", "--steps", "2", "--num_samples", "2", "--nll_batches", "0")
FIT = ("fit", *TINY, "--trainer.max_steps=1", "--trainer.default_root_dir={tmp}/run", "--seed_everything=false")
BASES = {"sample": SAMPLE, "eval": EVAL, "fit": FIT,
         "predict": ("predict", "--trainer.default_root_dir={tmp}/run", "--data.num_examples=400")}
NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")

# (command, extra arguments, a substring the message must hold, marks)
CASES = [
    # sample: out of range, NaN/inf, wrong type, empty, huge
    ("sample", ["--temperature", "inf"], "temperature must be a finite number > 0, got inf"),
    ("sample", ["--temperature", "nan"], "got nan"),
    ("sample", ["--temperature", "0"], "temperature must be"),
    ("sample", ["--temperature", "hot"], "invalid float value: 'hot'"),
    ("sample", ["--clamp_below_t", "2"], "clamp_below_t must be a time in [0, 1], got 2.0"),
    ("sample", ["--clamp_below_t", "nan"], "clamp_below_t must be"),
    ("sample", ["--commit", "maybe"], "'maybe' is not a boolean"),
    ("sample", ["--commit", ""], "'' is not a boolean"),
    ("sample", ["--num_samples", "1e9"], "invalid int value: '1e9'"),
    ("sample", ["--num_samples", "1000000000"], "at most 1,000,000, got 1000000000"),
    ("sample", ["--num_samples", "0"], "--num_samples"),
    ("sample", ["--num_samples", ""], "invalid int value: ''"),
    ("sample", ["--batch_size", "0"], "--batch_size must be a positive integer, got 0"),
    ("sample", ["--steps", "-3"], "steps must be a positive integer, got -3"),
    ("sample", ["--seed", "-1"], "--seed must be an integer in [0, 2**32), got -1"),
    ("sample", ["--restart_log_snr", "nan"], "restart_log_snr must be a finite number, got nan"),
    ("sample", ["--restart_log_snr_end=-inf"], "restart_log_snr_end must be a finite number, got -inf"),
    ("sample", ["--guidance_scale", "nan"], "--guidance_scale must be a finite number, got nan"),
    ("sample", ["--classifier_scale", "nan"], "--classifier_scale must be a finite number, got nan"),
    ("sample", ["--restarts", "-1"], "restarts must be a non-negative integer, got -1"),
    ("sample", ["--restart_steps", "0"], "restart_steps must be a positive integer, got 0"),
    ("sample", ["--restart_keep", "1.5"], "restart_keep must be a fraction in [0, 1], got 1.5"),
    ("sample", ["--restart_keep", "-0.1"], "got -0.1"),
    ("sample", ["--length", "0"], "--length must be"),
    ("sample", ["--length", "1000"], "1000"),
    ("sample", ["--length", ""], "is neither a number of tokens"),
    ("sample", ["--rounding", "round"], "unknown rounding 'round'"),
    ("sample", ["--anchor", "x=pub"], "'x=pub'"),
    ("sample", ["--anchor", "99999999999999999999=pub"], "99999999999999999999"),
    ("sample", ["--attribute", "="], "needs a key and a value"),
    ("sample", ["--template", ""], "template ''"),
    ("sample", ["--prefix", "pub " * 200], "does not fit in the sequence length"),
    ("sample", ["--method", "warp"], "unknown method 'warp'"),
    ("sample", ["--method", ""], "unknown method ''"),
    ("sample", ["--method", "scipy:Radau"], "'scipy:Radau' is an implicit solver"),
    ("sample", ["--method", "scipy:LSODA"], "'scipy:LSODA' is an implicit solver"),
    ("sample", ["--device", "cuda"], "--device 'cuda' is not available on this machine", NO_CUDA),
    ("sample", ["--device", "cuda:99"], "--device 'cuda:99' is not available"),
    ("sample", ["--device", "tpu9"], "--device 'tpu9' is not a device"),
    # sample: files
    ("sample", ["--ckpt_path", "{dir}"], "{dir}"),
    ("sample", ["--ckpt_path", "{tmp}/absent.ckpt"], "does not exist"),
    ("sample", ["--ckpt_path", ""], "--ckpt_path is empty"),
    ("sample", ["--ckpt_path", "{bin}"], "not a readable torch checkpoint"),
    ("sample", ["--ckpt_path", "{trunc}"], "not a readable torch checkpoint"),
    ("sample", ["--ckpt_path", "{shapes}"], "{shapes}"),
    ("sample", ["--ckpt_path", "{missing}"], "{missing}"),
    ("sample", ["--classifier_ckpt", "{ar}", "--attribute", "food=french"], "is not an AttributeClassifier"),
    ("sample", ["--output", "{ckpt}"], "would replace the input --ckpt_path"),
    ("sample", ["--output", "{ar}", "--classifier_ckpt", "{ar}", "--attribute", "x=y", "--overwrite"],
     "would replace the input --classifier_ckpt"),
    ("sample", ["--output", "{old}"], "exists; pass --overwrite"),
    ("sample", ["--output", "{dir}"], "is a directory"),
    ("sample", ["--output", ""], "--output is empty"),
    # eval
    ("eval", ["--reference_ckpt", "{ckpt}"], "holds the model DiffusionLM, which is not an autoregressive model"),
    ("eval", ["--classifier_ckpt", "{ar}", "--attribute", "food=french"], "is not an AttributeClassifier"),
    ("eval", ["--reference_ckpt", "{trunc}"], "not a readable torch checkpoint"),
    ("eval", ["--reference_ckpt", "{dir}"], "{dir}"),
    ("eval", ["--reference_ckpt", ""], "--reference_ckpt is empty"),
    ("eval", ["--ckpt_path", "{bin}"], "not a readable torch checkpoint"),
    ("eval", ["--nll_batches", "-1"], "--nll_batches must be a non-negative integer, got -1"),
    ("eval", ["--time_budget", "nan"], "--time_budget"),
    ("eval", ["--time_budget", "0"], "--time_budget"),
    ("eval", ["--format", "xml"], "invalid choice: 'xml'"),
    ("eval", ["--num_samples", "0"], "--num_samples"),
    ("eval", ["--temperature", "nan"], "temperature must be"),
    ("eval", ["--steps", "1e3"], "invalid int value: '1e3'"),
    ("eval", ["--method", "scipy:BDF"], "'scipy:BDF' is an implicit solver"),
    ("eval", ["--method", "torchdiffeq:scipy_solver"], "'torchdiffeq:scipy_solver' is an implicit solver"),
    ("eval", ["--attributes_from_data"], "needs the checkpoint's data with a condition_column"),
    ("eval", ["--device", "cuda"], "--device 'cuda' is not available on this machine", NO_CUDA),
    # fit: Lightning's own checks
    ("fit", ["--trainer.max_steps=-5"], "You passed in -5"),
    ("fit", ["--trainer.max_steps=abc"], "abc"),
    ("fit", ["--trainer.max_steps="], "trainer.max_steps"),
    ("fit", ["--trainer.max_steps=1e99"], "1e+99"),
    ("fit", ["--trainer.precision=bogus"], "trainer.precision"),
    ("fit", ["--trainer.devices=0"], "devices='0'"),
    ("fit", ["--trainer.accelerator=cuda"], "CUDAAccelerator", NO_CUDA),
    ("fit", ["--model=cdlm.NoSuchModel"], "NoSuchModel"),
    # fit: the model's constructors
    ("fit", ["--model.network.depth=0"], "depth must be a positive integer, got 0"),
    ("fit", ["--model.network.width=0"], "width must be a positive integer, got 0"),
    ("fit", ["--model.network.heads=0"], "heads must be a positive integer, got 0"),
    ("fit", ["--model.network.heads=3"], "width=32 is not divisible by heads=3"),
    ("fit", ["--model.network.embed_dim=0"], "embed_dim must be a positive integer, got 0"),
    ("fit", ["--model.network.dropout=1.0"], "dropout must be a probability in [0, 1), got 1.0"),
    ("fit", ["--model.network.dropout=-0.5"], "got -0.5"),
    ("fit", ["--model.network.dropout=nan"], "nan"),
    ("fit", ["--model.optim.lr=0"], "lr must be a finite number > 0, got 0.0"),
    ("fit", ["--model.optim.lr=-1"], "got -1"),
    ("fit", ["--model.optim.lr=inf"], "inf"),
    ("fit", ["--model.ema_decay=1.5"], "ema_decay must be in [0, 1], got 1.5"),
    ("fit", ["--model.ema_decay=-1"], "got -1"),
    ("fit", ["--model.sampler.method=scipy:Radau"], "'scipy:Radau' is an implicit solver"),
    ("fit", ["--model=cdlm.AutoregressiveLM", "--model.network.depth=0"], "depth must be a positive integer, got 0"),
    ("fit", ["--model=cdlm.AutoregressiveLM", "--model.optim.lr=0"], "lr must be"),
    ("fit", ["--data.seq_len=0"], "seq_len"),
    ("fit", ["--data.batch_size=0"], "batch_size"),
    ("fit", ["--data.num_examples=-1"], "-1"),
    # fit: files
    ("fit", ["--config={yaml}"], "Problems parsing config"),
    ("fit", ["--config={dir}"], "{dir}"),
    ("fit", ["--config={tmp}/missing.yaml"], "does not exist"),
    ("fit", ["--config={bin}"], "can't decode"),
    ("fit", ["--data.dataset={dir}"], "{dir}"),
    ("fit", ["--data.dataset={bin}"], "is not UTF-8 text"),
    ("fit", ["--data.dataset="], "''"),
    ("fit", ["--ckpt_path={dir}"], "is a directory"),
    ("fit", ["--ckpt_path={trunc}"], "not a readable torch checkpoint"),
    ("fit", ["--ckpt_path={ar}"], "cannot resume"),  # an AR checkpoint resumed as diffusion
    ("fit", ["--model=cdlm.AutoregressiveLM", "--ckpt_path={ckpt}"], "cannot resume"),  # and the reverse
    ("fit", ["--data.batch_size=100000"], "not one training batch"),
    # other subcommands
    ("predict", [], "`predict` is not a cdlm command"),  # the models have no predict step: `cdlm sample` writes samples
]
RESULTS: list[tuple[str, str, int]] = []


def _param(case):
    command, extra, expect, *marks = case
    return pytest.param(command, extra, expect, marks=marks, id=f"{command} {' '.join(extra)[:60]}")


@pytest.fixture
def files(tmp_path, tiny_ckpt, tiny_ar_ckpt):
    (tmp_path / "empty_dir").mkdir()
    (tmp_path / "bin.txt").write_bytes(b"\xff\xfe\x00\x80" * 256)
    (tmp_path / "bad.yaml").write_text("model: [unclosed\n  width: {\n")
    data = tiny_ckpt.read_bytes()
    (tmp_path / "trunc.ckpt").write_bytes(data[: len(data) // 2])
    (tmp_path / "old.jsonl").write_text('{"text": "keep me"}\n')
    ckpt = torch.load(tiny_ckpt, weights_only=True)
    key = "net.head.weight"
    ckpt["state_dict"][key] = torch.zeros(3, 3)
    torch.save(ckpt, tmp_path / "shapes.ckpt")
    del ckpt["state_dict"][key]
    torch.save(ckpt, tmp_path / "missing.ckpt")
    return {"ckpt": str(tiny_ckpt), "ar": str(tiny_ar_ckpt), "dir": str(tmp_path / "empty_dir"),
            "bin": str(tmp_path / "bin.txt"), "yaml": str(tmp_path / "bad.yaml"), "trunc": str(tmp_path / "trunc.ckpt"),
            "shapes": str(tmp_path / "shapes.ckpt"), "missing": str(tmp_path / "missing.ckpt"),
            "old": str(tmp_path / "old.jsonl"), "tmp": str(tmp_path)}


def _outcome(capsys, argv) -> tuple[str, int]:
    """test_cli's `fails`, also giving the exit status a shell would see (for the table)."""
    with pytest.raises(SystemExit) as exc:
        main(argv)
    code = exc.value.code
    message = code if isinstance(code, str) else capsys.readouterr().err
    return message.strip(), 1 if isinstance(code, str) else code


def _hashes(*roots) -> dict:
    out = {}
    for root in roots:
        paths = [root] if os.path.isfile(root) else [os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs]
        for path in paths:
            with open(path, "rb") as f:
                out[path] = hashlib.sha256(f.read()).hexdigest()
    return out


@pytest.mark.parametrize("command, extra, expect", [_param(c) for c in CASES])
def test_bad_input_is_one_line_and_changes_nothing(command, extra, expect, files, tmp_path, capsys):
    argv = [a.format(**files) for a in (*BASES[command], *extra)]
    before = _hashes(str(tmp_path), files["ckpt"], files["ar"])
    message, code = _outcome(capsys, argv)
    shown = message.replace(str(tmp_path), "TMP").replace(files["ckpt"], "{ckpt}").replace(files["ar"], "{ar}")
    RESULTS.append((f"{command} {' '.join(extra)}"[:90], shown[:200], code))
    assert code not in (0, None) and "Traceback" not in message
    assert message.count("\n") == 0, message
    assert message.startswith("cdlm"), message
    assert expect.format(**files) in message
    after = _hashes(str(tmp_path), files["ckpt"], files["ar"])
    assert {p: h for p, h in after.items() if p in before} == before  # no existing file changed


def test_stderr_is_exactly_one_line_in_a_real_process(tmp_path):
    # Lightning's own error (MisconfigurationException), through the console entry point
    proc = subprocess.run([sys.executable, "-m", "cdlm.cli", "fit", "--trainer.max_steps=-5", "--seed_everything=false",
                           "--data.num_examples=400", f"--trainer.default_root_dir={tmp_path}"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("cdlm: error: `max_steps` must be"), proc.stderr


def test_cdlm_traceback_shows_the_traceback(tiny_ckpt, monkeypatch):
    monkeypatch.setenv("CDLM_TRACEBACK", "1")
    with pytest.raises(ValueError, match="temperature must be"):
        main(["sample", "--ckpt_path", str(tiny_ckpt), "--temperature", "nan"])


def test_interrupt_exits_130(monkeypatch, capsys):
    import cdlm.cli

    def interrupted(argv):
        raise KeyboardInterrupt

    monkeypatch.setattr(cdlm.cli, "cmd_sample", interrupted)
    with pytest.raises(SystemExit) as exc:
        main(["sample"])
    assert exc.value.code == 130 and capsys.readouterr().err == "cdlm: interrupted\n"


def test_output_is_replaced_only_with_overwrite(tiny_ckpt, tmp_path, capsys):
    out = tmp_path / "s.jsonl"
    out.write_text("old\n")
    main(["sample", "--ckpt_path", str(tiny_ckpt), "--num_samples", "2", "--steps", "2", "--output", str(out), "--overwrite"])
    assert len(out.read_text().splitlines()) == 2 and "old" not in out.read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.jsonl"]  # no temporary file left


def test_bf16_true_trains(tmp_path, fit):
    last = fit(tmp_path, "--trainer.max_steps=2", "--trainer.precision=bf16-true", "--trainer.limit_val_batches=0")
    assert torch.load(last, weights_only=True)["global_step"] == 2


@pytest.fixture(scope="module", autouse=True)
def _table():
    yield
    if RESULTS:
        print("\n| input | message | exit code |\n| --- | --- | --- |")
        for command, message, code in RESULTS:
            print(f"| `{command}` | {message.replace('|', '/')} | {code} |")
