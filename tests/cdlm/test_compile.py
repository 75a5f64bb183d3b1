"""`--model.compile`: the network runs under torch.compile and checkpoints
stay interchangeable with uncompiled models (no `_orig_mod.` keys), both ways."""

import pytest
import torch

from cdlm.checkpoints import load_checkpoint


def _compiled(net) -> bool:
    return getattr(net, "_compiled_call_impl", None) is not None


@pytest.mark.slow
def test_compiled_checkpoint_loads_uncompiled_and_back(tmp_path, tiny_ar_ckpt):
    from cdlm.cli import main

    # an uncompiled checkpoint loads into a compiled model, which computes the same logits
    plain, _ = load_checkpoint(str(tiny_ar_ckpt))
    compiled, _ = load_checkpoint(str(tiny_ar_ckpt), compile=True)
    assert not _compiled(plain.net) and _compiled(compiled.net)
    assert list(compiled.state_dict()) == list(plain.state_dict())
    ids = torch.randint(0, plain.tokenizer.get_vocab_size(), (4, plain.hparams.seq_len))
    with torch.no_grad():
        torch.testing.assert_close(compiled.token_nll(ids), plain.token_nll(ids), rtol=1e-4, atol=1e-4)

    # a checkpoint trained compiled (`cdlm fit --model.compile=true`) loads into an uncompiled model
    main(["fit", "--model=cdlm.AutoregressiveLM", "--model.compile=true", "--data.num_examples=200",
          "--data.batch_size=8", "--model.network.width=16", "--model.network.depth=1", "--model.network.heads=2", "--model.val_samples=0",
          "--trainer.max_steps=2", "--trainer.limit_val_batches=0", "--trainer.enable_progress_bar=false",
          "--trainer.enable_model_summary=false", f"--trainer.default_root_dir={tmp_path}",
          "--trainer.callbacks+=lightning.pytorch.callbacks.ModelCheckpoint",
          f"--trainer.callbacks.dirpath={tmp_path}/ckpt", "--trainer.callbacks.save_last=true"])
    ckpt = torch.load(tmp_path / "ckpt" / "last.ckpt", map_location="cpu", weights_only=False)
    assert ckpt["hyper_parameters"]["compile"] is True
    assert not any("_orig_mod" in k for k in ckpt["state_dict"])
    model, _ = load_checkpoint(str(tmp_path / "ckpt" / "last.ckpt"), compile=False)
    assert not _compiled(model.net)
    for k, v in model.state_dict().items():
        assert torch.equal(v, ckpt["state_dict"][k]), k
    assert model.sample_ids(2, seed=0).ids.shape == (2, model.hparams.seq_len)
