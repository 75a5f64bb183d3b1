import os

# Tests never touch the network: a hub name fails at once instead of retrying.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import pytest  # noqa: E402

# The quick lane, `pytest -m "not slow"`: the unit tests of every module, in about two minutes. A
# test is slow when it trains through `cdlm fit` (the fixtures below), or its module runs notebooks,
# processes, compilation or the lab's training runs; the full suite runs everything.
TRAINING_FIXTURES = {"tiny_ckpt", "tiny_ar_ckpt", "fit", "masked_ckpt", "lab_runs", "run"}
SLOW_MODULES = {"test_notebooks.py", "test_ddp.py", "test_big_data.py", "test_compile.py", "test_lab.py",
                "test_run_guards.py", "test_tensorboard.py", "test_cli_fuzz.py"}


def pytest_collection_modifyitems(config, items):
    for item in items:
        if TRAINING_FIXTURES & set(getattr(item, "fixturenames", ())) or item.path.name in SLOW_MODULES:
            item.add_marker(pytest.mark.slow)
