"""`cdlm lab`: every claim's command at tiny settings, end to end (real training runs), and its bad input."""

import json
import os

import pytest

from cdlm.lab import main

TINY_LAB = ["--steps", "12", "--width", "32", "--depth", "1", "--questions", "3"]
COMMANDS = {
    "reversal": [],
    "data-efficiency": ["--sizes", "64", "--eval_every", "6", "--samples", "4"],
    "anchors": ["--per_set", "3"],
    "loops": ["--max_hops", "3"],
}


@pytest.fixture(scope="module")
def lab_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("lab")
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    reports = {name: main([name, *TINY_LAB, *extra, "--out", str(root / name)]) for name, extra in COMMANDS.items()}
    return root, reports


@pytest.mark.parametrize("name", list(COMMANDS))
def test_each_claim_prints_a_table_and_writes_a_figure(lab_runs, name):
    root, reports = lab_runs
    out = root / name
    assert (out / f"{name}.png").stat().st_size > 1000
    rows = json.loads((out / f"{name}.json").read_text())["rows"]
    table = reports[name]
    for row in rows:
        assert f"| {row} |" in table
    models = {"ar", "masked", "continuous"}
    assert {r.split()[0].rstrip(",") for r in rows} >= models
    floats = [v for row in rows.values() for v in row.values() if isinstance(v, float)]
    assert floats and all(v == v for v in floats)  # no NaN: every cell was measured


def test_reversal_asks_infilling_only_of_diffusion(lab_runs):
    rows = json.loads((lab_runs[0] / "reversal" / "reversal.json").read_text())["rows"]
    assert "reverse (held out), infilling" not in rows["ar"]
    assert all(0.0 <= v <= 1.0 for r in rows.values() for v in r.values())
    assert "reverse (held out), infilling" in rows["masked"]


def test_loops_compares_equal_parameters_and_equal_compute(lab_runs):
    rows = json.loads((lab_runs[0] / "loops" / "loops.json").read_text())["rows"]
    assert {"masked base", "masked looped", "masked deep", "ar looped", "continuous deep"} <= set(rows)
    assert "bac 3" in rows["ar base"] and "mix 2" in rows["ar base"]


def test_a_second_run_reuses_finished_training(lab_runs, capsys):
    root, _ = lab_runs
    main(["reversal", *TINY_LAB, "--out", str(root / "reversal"), "--models", "ar"])
    assert "reusing ar_s0" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["reversal", "--models", "gpt"], "unknown --models gpt"),
    (["reversal", "--steps", "0"], "--steps: must be > 0, got 0"),
    (["reversal", "--fit_arg", "bogus"], "--fit_arg 'bogus' is not MODEL:--ARG=VALUE"),
    (["loops", "--loops", "1"], "--loops must be at least 2, got 1"),
    (["haiku"], "invalid choice: 'haiku'"),
])
def test_bad_input_is_one_line(tmp_path, argv, message):
    with pytest.raises(SystemExit) as err:
        main([*argv, "--out", str(tmp_path)] if argv[0] != "haiku" else argv)
    assert message in str(err.value) and "\n" not in str(err.value)


# ---------------------------------------------------------------- the measurements' bookkeeping, without training
def test_a_strict_budget_drops_the_batch_that_ends_after_it():
    import time
    from types import SimpleNamespace

    import torch

    from cdlm.evaluation import rejection_sample

    class SlowModel:
        hparams = SimpleNamespace(seq_len=4)

        def sample_ids(self, n, seed=None):
            time.sleep(0.2)
            return SimpleNamespace(ids=torch.ones(n, 4, dtype=torch.long))

    def accept(ids):
        return torch.ones(len(ids), dtype=torch.bool)

    late, tried = rejection_sample(SlowModel(), accept, 8, 0.05, batch_size=4, strict=True)
    assert late.shape == (0, 4) and tried == 4  # drawn, but not delivered in time
    assert len(rejection_sample(SlowModel(), accept, 8, 0.05, batch_size=4)[0]) == 4  # cdlm eval's budget


def test_data_efficiency_scores_the_steps_every_seed_reached_at_the_runs_batch(tmp_path, monkeypatch):
    from cdlm.lab import data_efficiency, parser

    a = parser().parse_args(["data-efficiency", "--seeds", "0,1", "--sizes", "64", "--eval_every", "6",
                             "--models", "ar", "--out", str(tmp_path)])
    a.out = tmp_path

    def train(runs, out, *args):
        for r in runs:  # a --minutes budget: seed 0 got one checkpoint further
            folder = r.checkpoint(out).parent
            folder.mkdir(parents=True)
            for step in (6, 12, 18) if r.name.endswith("_s0") else (6, 12):
                (folder / f"step={step}.ckpt").touch()
        return {r.name: r.checkpoint(out) for r in runs}

    def score(ckpt, val_texts, samples):
        step = int(ckpt.stem.split("=")[1])
        return {"nll_bits_per_token": 10.0 - step / 6, "validity": 0.5, "batch_size": 32}

    monkeypatch.setattr(data_efficiency, "train", train)
    monkeypatch.setattr(data_efficiency, "score", score)
    data_efficiency.run(a)
    rows = json.loads((tmp_path / "data-efficiency.json").read_text())["rows"]
    assert rows["ar, 64 sentences"]["final_epoch"] == 12 * 32 / 64  # step 12, 32 sentences a step
    assert rows["ar, 64 sentences"]["final_nll_bits_per_token"] == 8.0


def test_a_run_leaves_no_log_open_and_a_failed_retrain_is_not_reused(tmp_path, monkeypatch):
    from cdlm.lab import runs

    opened = []

    class Proc:
        returncode = 1

        def __init__(self, args, stdout, **kwargs):
            opened.append(stdout)
            stdout.write("cdlm: error: boom\n")

        def poll(self):
            return 1

    monkeypatch.setattr(runs.subprocess, "Popen", Proc)
    monkeypatch.setattr(runs.time, "sleep", lambda s: None)
    run = runs.Run("ar_s0", "ar", ["--seed_everything=0"])
    run.checkpoint(tmp_path).parent.mkdir(parents=True)
    run.checkpoint(tmp_path).touch()  # a finished run of other arguments (or a retrain's partial one)
    (tmp_path / "ar_s0" / "run.json").write_text(json.dumps({"model": "ar", "args": ["--seed_everything=1"]}))
    with pytest.raises(SystemExit, match="training ar_s0 failed .*boom"):
        runs.train([run], tmp_path, [], parallel=1)
    assert opened and all(f.closed for f in opened)
    assert not (tmp_path / "ar_s0" / "run.json").exists()  # the old record no longer vouches for last.ckpt


def test_a_run_is_reused_only_on_the_same_data(tmp_path, monkeypatch):
    from pathlib import Path

    from cdlm.lab import runs

    class Proc:  # a training run that finishes at once
        returncode = 0

        def __init__(self, args, stdout, **kwargs):
            given = dict(a.split("=", 1) for a in args if a.startswith(("--trainer.default_root_dir=", "--name=")))
            ckpt = runs.checkpoint_of(Path(given["--trainer.default_root_dir"]), given["--name"])
            ckpt.parent.mkdir(parents=True, exist_ok=True)
            ckpt.touch()

        def poll(self):
            return 0

    monkeypatch.setattr(runs.subprocess, "Popen", Proc)
    monkeypatch.setattr(runs.time, "sleep", lambda s: None)
    data = tmp_path / "train.txt"  # rewritten in place by a rerun with another --seed
    run = runs.Run("ar_s0", "ar", [f"--data.dataset={data}"])
    said = []
    for text in ("the mentor of ada kowalski is omar lindqvist .", "the mentor of ada kowalski is omar lindqvist .",
                 "the parent of lena okafor is kofi osei ."):
        data.write_text(text + "\n")
        runs.train([run], tmp_path, ["--trainer.max_steps=3"], log=said.append)
    assert said == ["training ar_s0", "reusing ar_s0", "training ar_s0"]


def test_stop_when_learned_checks_every_n_steps_and_stops_at_the_target(tmp_path):
    from types import SimpleNamespace

    from cdlm.lab.criterion import StopWhenLearned, learned_at

    questions = tmp_path / "q.json"
    questions.write_text(json.dumps([["the mentor of a b is", "c d"]]))
    stop = StopWhenLearned(str(questions), target=0.5, every=10, log_file=str(tmp_path / "curve.jsonl"))
    scores = iter([0.0, 0.25, 0.75])
    stop.score = lambda model: next(scores)
    module = SimpleNamespace(training=True, train=lambda mode: None, log=lambda *a, **k: None)
    trainer = SimpleNamespace(global_step=0, should_stop=False)
    for step in range(1, 31):
        trainer.global_step = step
        stop.on_train_batch_end(trainer, module, None, None, step)
        if trainer.should_stop:
            break
    assert [h["step"] for h in stop.history] == [10, 20, 30] and trainer.global_step == 30
    assert learned_at(stop.history, 0.5) == 30 and learned_at(stop.history, 0.9) is None
    assert len((tmp_path / "curve.jsonl").read_text().splitlines()) == 3
    restored = StopWhenLearned(str(questions))
    restored.load_state_dict(stop.state_dict())
    assert restored.history == stop.history


def test_reversal_until_a_criterion_reports_the_curve_to_the_cap(tmp_path):
    report = main(["reversal", *TINY_LAB, "--models", "ar", "--until", "1.0", "--check_every", "5",
                   "--links", "40", "--chains", "4", "--out", str(tmp_path)])
    curve = [json.loads(line) for line in (tmp_path / "ar_s0.criterion.jsonl").read_text().splitlines()]
    assert [c["step"] for c in curve] == [5, 10] and "train score" in report
    row = json.loads((tmp_path / "reversal.json").read_text())["rows"]["ar"]
    assert row["steps to learn"] in ("not by the cap", 5.0, 10.0) and 0.0 <= row["train score"] <= 1.0
