import pytest

# A model small enough to train in seconds; the same settings serve every CLI test.
TINY = [
    "--data.num_examples=400", "--data.seq_len=40", "--data.batch_size=16",
    "--model.network.width=32", "--model.network.depth=1", "--model.network.heads=2", "--model.network.embed_dim=8",
    "--model.optim.warmup_steps=5", "--model.val_samples=4", "--model.sampler.steps=5",
    "--trainer.limit_val_batches=2", "--trainer.enable_progress_bar=false",
    "--trainer.enable_model_summary=false", "--trainer.log_every_n_steps=5",
]


def fails(capsys, *argv) -> str:
    """Runs `cdlm ARGV`, which must fail: a non-zero exit and one line on stderr, no traceback."""
    from cdlm.cli import main

    with pytest.raises(SystemExit) as exc:
        main(list(argv))
    assert exc.value.code not in (0, None)
    err = str(exc.value.code) if isinstance(exc.value.code, str) else capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    return err


def _fit(tmp_path, *extra):
    from cdlm.cli import main

    main([
        "fit", *TINY, f"--trainer.default_root_dir={tmp_path}",
        "--trainer.callbacks+=lightning.pytorch.callbacks.ModelCheckpoint",
        f"--trainer.callbacks.dirpath={tmp_path}/ckpt", "--trainer.callbacks.save_last=true", *extra,
    ])
    return tmp_path / "ckpt" / "last.ckpt"


@pytest.fixture(scope="session")
def tiny_ckpt(tmp_path_factory):
    """A checkpoint from a 30-step `cdlm fit` on the embedded corpus."""
    tmp = tmp_path_factory.mktemp("fit")
    return _fit(tmp, "--trainer.max_steps=30", "--trainer.val_check_interval=15", "--trainer.check_val_every_n_epoch=null")


@pytest.fixture
def fit():
    """`fit(tmp_path, *cli_args) -> last checkpoint path` with the tiny settings."""
    return _fit


@pytest.fixture(scope="session")
def tiny_ar_ckpt(tmp_path_factory):
    """A checkpoint from a 30-step `cdlm fit --model cdlm.AutoregressiveLM`."""
    from cdlm.cli import main

    tmp = tmp_path_factory.mktemp("fit_ar")
    main([
        "fit", "--model=cdlm.AutoregressiveLM", "--data.num_examples=400", "--data.batch_size=16",
        "--model.network.width=32", "--model.network.depth=1", "--model.network.heads=2", "--model.optim.warmup_steps=5", "--model.val_samples=4",
        "--trainer.max_steps=30", "--trainer.limit_val_batches=2", "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false", f"--trainer.default_root_dir={tmp}",
        "--trainer.callbacks+=lightning.pytorch.callbacks.ModelCheckpoint",
        f"--trainer.callbacks.dirpath={tmp}/ckpt", "--trainer.callbacks.save_last=true",
    ])
    return tmp / "ckpt" / "last.ckpt"
