"""The `cdlm` command end to end, in-process (fast) and once as a real subprocess."""

import json
import subprocess
import sys

import pytest
import torch

from cdlm.cli import main
from tests.cdlm.conftest import fails


def run(capsys, *argv):
    main(list(argv))
    return capsys.readouterr().out


def test_sample_prints_text_and_writes_jsonl(tiny_ckpt, tmp_path, capsys):
    out = tmp_path / "s.jsonl"
    text = run(capsys, "sample", "--ckpt_path", str(tiny_ckpt), "--num_samples", "3", "--steps", "4", "--output", str(out))
    assert len(text.strip().splitlines()) <= 3
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 3 and {"text", "tokens"} <= rows[0].keys() and len(rows[0]["tokens"]) == 40


def test_eval_reports_validity_unique_novel_nfe(tiny_ckpt, capsys):
    out = run(capsys, "eval", "--ckpt_path", str(tiny_ckpt), "--num_samples", "8", "--steps", "3")
    result = json.loads(out)
    for key in ("validity", "unique", "novel", "nfe", "method", "steps", "distinct_1"):
        assert key in result
    assert result["nfe"] == 4 and 0.0 <= result["validity"] <= 1.0
    md = run(capsys, "eval", "--ckpt_path", str(tiny_ckpt), "--num_samples", "4", "--steps", "2", "--format", "md")
    assert md.startswith("| metric | value |")


def test_sample_and_eval_with_anchors_and_length(tiny_ckpt, tmp_path, capsys):
    out = tmp_path / "a.jsonl"
    run(capsys, "sample", "--ckpt_path", str(tiny_ckpt), "--num_samples", "3", "--steps", "4",
        "--anchor", "2=pub", "--anchor", "5=bakers", "--output", str(out))
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert all(r["tokens"][2] == "pub" and r["tokens"][5] == "bakers" for r in rows)
    result = json.loads(run(capsys, "eval", "--ckpt_path", str(tiny_ckpt), "--num_samples", "4", "--steps", "3",
                            "--template", "the ___ is a ___ .", "--nll_batches", "0"))
    assert result["constraint_satisfaction"] == 1.0 and result["mean_words"] == 6
    assert "two anchors on position 2" in fails(capsys, "sample", "--ckpt_path", str(tiny_ckpt), "--anchor", "2=pub",
                                                "--anchor", "2=the")
    assert "has no blank" in fails(capsys, "sample", "--ckpt_path", str(tiny_ckpt), "--template", "the pub")
    assert "neither a number of tokens" in fails(capsys, "sample", "--ckpt_path", str(tiny_ckpt), "--length", "long")
    result = json.loads(run(capsys, "eval", "--ckpt_path", str(tiny_ckpt), "--num_samples", "4", "--steps", "2",
                            "--length", "data", "--nll_batches", "0"))  # lengths drawn from the training texts
    assert "constraint_satisfaction" not in result and result["nfe"] == 3
    assert "does not fit" in fails(capsys, "sample", "--ckpt_path", str(tiny_ckpt), "--anchor", "99=pub")


def test_attribute_control_from_the_command_line(tmp_path, fit, tiny_ckpt, tiny_ar_ckpt, capsys):
    ckpt = fit(tmp_path, "--data.condition_column=mr", "--trainer.max_steps=10", "--trainer.limit_val_batches=0")
    out = tmp_path / "a.jsonl"
    run(capsys, "sample", "--ckpt_path", str(ckpt), "--num_samples", "2", "--steps", "3", "--attribute", "food=french",
        "--attribute", "area=riverside", "--guidance_scale", "2", "--output", str(out))
    assert len(out.read_text().splitlines()) == 2
    result = json.loads(run(capsys, "eval", "--ckpt_path", str(ckpt), "--num_samples", "4", "--steps", "3",
                            "--attributes_from_data", "--nll_batches", "1"))
    assert {"attribute_accuracy", "attribute_exact", "attribute_mention", "guidance_scale", "nll_bits_per_token"} <= result.keys()
    assert "food='thai' was never seen" in fails(capsys, "sample", "--ckpt_path", str(ckpt), "--attribute", "food=thai")
    assert "not KEY=VALUE" in fails(capsys, "sample", "--ckpt_path", str(ckpt), "--attribute", "french")
    assert "trained without attributes" in fails(capsys, "sample", "--ckpt_path", str(tiny_ckpt), "--attribute", "food=french")
    # plug-and-play: a classifier fit on the unconditional model's embeddings guides it
    clf = tmp_path / "clf"
    main(["fit", "--model=cdlm.AttributeClassifier", f"--model.diffusion_ckpt={tiny_ckpt}", "--model.width=32",
          "--model.depth=1", "--model.heads=2", "--data.num_examples=400", "--data.condition_column=mr",
          "--trainer.max_steps=3", "--trainer.limit_val_batches=1", "--trainer.enable_progress_bar=false",
          f"--trainer.default_root_dir={clf}", "--trainer.callbacks+=lightning.pytorch.callbacks.ModelCheckpoint",
          f"--trainer.callbacks.dirpath={clf}", "--trainer.callbacks.save_last=true"])
    main(["fit", "--model=cdlm.AttributeClassifier", f"--model.diffusion_ckpt={tiny_ckpt}", "--model.width=32",  # resumed
          "--model.depth=1", "--model.heads=2", "--data.num_examples=400", "--data.condition_column=mr",
          "--trainer.max_steps=5", "--trainer.limit_val_batches=1", "--trainer.enable_progress_bar=false",
          f"--trainer.default_root_dir={clf}", "--trainer.callbacks+=lightning.pytorch.callbacks.ModelCheckpoint",
          f"--trainer.callbacks.dirpath={clf}", "--trainer.callbacks.save_last=true", "--ckpt_path", str(clf / "last.ckpt")])
    assert torch.load(clf / "last.ckpt", weights_only=True)["global_step"] == 5
    guided = json.loads(run(capsys, "eval", "--ckpt_path", str(tiny_ckpt), "--classifier_ckpt", str(clf / "last.ckpt"),
                            "--attribute", "food=french", "--classifier_scale", "2", "--num_samples", "2", "--steps", "2",
                            "--nll_batches", "0"))
    assert guided["classifier_scale"] == 2.0 and "attribute_accuracy" in guided
    assert "does not generate" in fails(capsys, "sample", "--ckpt_path", str(clf / "last.ckpt"))
    assert "is not an AttributeClassifier" in fails(capsys, "sample", "--ckpt_path", str(tiny_ckpt), "--classifier_ckpt",
                                                    str(tiny_ckpt), "--attribute", "food=french")
    assert "is not an autoregressive model" in fails(capsys, "eval", "--ckpt_path", str(tiny_ckpt), "--reference_ckpt",
                                                     str(tiny_ckpt), "--num_samples", "2")
    assert "not a DiffusionLM" in fails(capsys, "fit", "--model=cdlm.AttributeClassifier", f"--model.diffusion_ckpt={tiny_ar_ckpt}",
                                        "--data.num_examples=400", "--data.condition_column=mr", "--trainer.max_steps=1")
    # the left-to-right baseline meets an attribute only by rejection
    ar = json.loads(run(capsys, "eval", "--ckpt_path", str(tiny_ar_ckpt), "--num_samples", "2", "--attribute",
                        "food=french", "--time_budget", "1", "--nll_batches", "0"))
    assert ar["rejection_tried"] > 0 and "guidance_scale" not in ar


def test_bad_input_is_one_line(tiny_ckpt, tmp_path, capsys):
    assert "does not exist" in fails(capsys, "sample", "--ckpt_path", str(tmp_path / "missing.ckpt"))
    corrupt = tmp_path / "corrupt.ckpt"
    corrupt.write_bytes(b"not a checkpoint")
    assert "not a readable torch checkpoint" in fails(capsys, "eval", "--ckpt_path", str(corrupt))
    assert "unknown method 'warp'" in fails(capsys, "sample", "--ckpt_path", str(tiny_ckpt), "--method", "warp")
    assert "error: steps must be a positive integer, got -3" in fails(capsys, "sample", "--ckpt_path", str(tiny_ckpt), "--steps", "-3")
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    assert "holds no text" in fails(capsys, "fit", f"--data.dataset={empty}", "--trainer.max_steps=1")
    assert "offline" in fails(capsys, "fit", "--data.dataset=someone/some-dataset", "--trainer.max_steps=1")
    assert "'no_such_key' is not accepted" in fails(capsys, "fit", "--model.no_such_key=1")
    assert "abc" in fails(capsys, "fit", "--trainer.max_steps=abc")
    fails(capsys, "fit", "--trainer.max_steps=1", "--ckpt_path", str(corrupt))


def test_resume_from_checkpoint(tiny_ckpt, tmp_path, fit):
    # continues the 30-step run to 40 steps from its last checkpoint
    last = fit(tmp_path, "--trainer.max_steps=40", "--ckpt_path", str(tiny_ckpt))
    import torch

    assert torch.load(last, weights_only=True)["global_step"] == 40


def test_console_script_subprocess(tiny_ckpt):
    proc = subprocess.run([sys.executable, "-m", "cdlm.cli", "sample", "--ckpt_path", str(tiny_ckpt), "--steps", "-1"],
                          capture_output=True, text=True)
    assert proc.returncode != 0
    assert proc.stderr.strip().count("\n") == 0 and "got -1" in proc.stderr


@pytest.mark.parametrize("config", ["quickstart", "quickstart_ar", "e2e", "e2e_ar", "shakespeare_char", "shakespeare_char_ar",
                                    "prose", "prose_ar", "prose_masked"])
def test_configs_parse(config, capsys):
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "configs" / f"{config}.yaml"
    with pytest.raises(SystemExit) as exc:
        main(["fit", f"--config={path}", "--print_config"])
    assert exc.value.code in (0, None)
    assert "class_path: cdlm." in capsys.readouterr().out


def test_the_fsdp_trainer_piece_parses(capsys):
    """configs/trainer/gpu_fsdp.yaml in place of a config's trainer (parsed only: no GPU here)."""
    from pathlib import Path

    configs = Path(__file__).resolve().parents[2] / "configs"
    with pytest.raises(SystemExit) as exc:
        main(["fit", f"--config={configs / 'quickstart.yaml'}", f"--trainer={configs / 'trainer' / 'gpu_fsdp.yaml'}",
              "--print_config"])
    assert exc.value.code in (0, None)
    out = capsys.readouterr().out
    assert "FSDPStrategy" in out and "- cdlm.networks.Block" in out and "state_dict_type: full" in out


@pytest.mark.parametrize("flags", [["--trainer.precision=bf16-mixed"],
                                   ["--trainer.accelerator=cpu", "--trainer.devices=2", "--trainer.strategy=ddp_spawn"]],
                         ids=["bf16-mixed", "ddp_spawn-2-cpus"])
def test_lightning_precision_and_strategy_flags(flags, tmp_path, fit):
    last = fit(tmp_path, "--trainer.max_steps=4", *flags)
    import torch

    assert torch.load(last, weights_only=True)["global_step"] == 4


def test_checkpoints_are_written_atomically(tmp_path, fit, monkeypatch):
    import os

    renames = []
    real_replace = os.replace

    def spy(src, dst):
        renames.append((str(src), str(dst)))
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", spy)
    last = fit(tmp_path, "--trainer.max_steps=2")
    assert last.is_file()
    assert any(dst.endswith(".ckpt") and os.path.dirname(src) == os.path.dirname(dst) and src.endswith(".tmp")
               for src, dst in renames)
    assert not list(last.parent.glob("*.tmp"))


def test_help_lists_every_command_without_loading_lightning():
    code = "import sys; from cdlm.cli import main; main(['--help']); print('lightning' in sys.modules, 'torch' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0
    for command in ("fit", "validate", "test", "sample", "eval", "diagnose", "export", "lab"):
        assert f"\n  {command} " in proc.stdout
    assert proc.stdout.strip().endswith("False False")  # fast: neither torch nor Lightning is imported
