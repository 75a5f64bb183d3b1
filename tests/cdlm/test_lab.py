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
