"""A short real `cdlm fit` writes what a researcher reads in TensorBoard: the learning rate, the
hyperparameters with final metrics (no −1 placeholder), token embeddings in the projector,
labelled by token, and at each validation the three figures."""

from pathlib import Path

import pytest
import torch

from cdlm.cli import main
from cdlm.dashboard import FIGURES
from tests.cdlm.conftest import TINY

COMMON = [a for a in TINY if not a.startswith(("--model.network.embed_dim", "--model.sampler.steps"))]
MODELS = {
    "continuous": ["--model=cdlm.DiffusionLM", "--model.network.embed_dim=8", "--model.sampler.steps=5"],
    "masked": ["--model=cdlm.MaskedDiffusionLM", "--model.sampler.steps=10"],
    "autoregressive": ["--model=cdlm.AutoregressiveLM"],
}


def _events(folder: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    files = sorted(folder.glob("events.out.tfevents.*"))
    assert len(files) == 1, files
    events = EventAccumulator(str(files[0]), size_guidance={"images": 0, "scalars": 0, "tensors": 0})
    events.Reload()
    return events


@pytest.fixture(scope="module", params=list(MODELS))
def run(request, tmp_path_factory):
    """(model kind, the logger's version folder) of a 20-step fit validating at steps 10 and 20."""
    tmp = tmp_path_factory.mktemp(f"tb_{request.param}")
    main(["fit", *COMMON, *MODELS[request.param], f"--trainer.default_root_dir={tmp}", "--trainer.max_steps=20",
          "--trainer.val_check_interval=10", "--trainer.check_val_every_n_epoch=null",
          "--dashboard.num_samples=4", "--dashboard.steps=[2,4]", "--dashboard.noise_levels=6"])
    return request.param, tmp / "lightning_logs" / "version_0"


def test_learning_rate_is_logged_every_step(run):
    kind, folder = run
    events = _events(folder)
    lr_tags = [t for t in events.Tags()["scalars"] if t.startswith("lr-")]
    assert lr_tags, events.Tags()["scalars"]
    values = [e.value for e in events.Scalars(lr_tags[0])]
    assert len(values) >= 3 and max(values) > values[-1] > 0  # warm-up, then cosine decay


def test_hparams_carry_the_final_metrics_and_no_placeholder(run):
    from tensorboard.plugins.hparams import plugin_data_pb2

    kind, folder = run
    events = _events(folder)
    assert "hp_metric" not in events.Tags()["scalars"]
    content = events.PluginTagToContent("hparams")
    experiment = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"]).experiment
    metrics = {m.name.tag for m in experiment.metric_infos}
    assert {"final/val/loss", "final/train/loss", "final/steps"} <= metrics
    if kind != "autoregressive":
        assert "final/val/validity" in metrics  # the embedded corpus
    start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"]).session_start_info
    hparams = dict(start.hparams)
    assert hparams["model/network.width"].number_value == 32 and hparams["data/dataset"].string_value == "embedded"
    assert hparams["model/class"].string_value.endswith("LM") and "model/tokenizer_json" not in hparams
    final = events.Scalars("final/val/loss")
    assert len(final) == 1 and final[0].step == 20
    assert final[0].value == pytest.approx(events.Scalars("val/loss")[-1].value)


def test_token_embeddings_are_in_the_projector_labelled_by_token(run):
    kind, folder = run
    config = (folder / "projector_config.pbtxt").read_text()
    assert 'tensor_name: "token_embeddings:00020"' in config
    labels = (folder / "00020" / "token_embeddings" / "metadata.tsv").read_text().splitlines()
    rows = (folder / "00020" / "token_embeddings" / "tensors.tsv").read_text().splitlines()
    assert len(labels) == len(rows) > 50
    assert labels[:2] == ["[PAD]", "[UNK]"] and "pub" in labels and "restaurant" in labels
    if kind == "masked":
        assert labels[-1] == "[MASK]"


def test_figures_at_each_validation(run):
    kind, folder = run
    events = _events(folder)
    images = events.Tags()["images"]
    expected = ["figures/context"] if kind == "autoregressive" else FIGURES  # AR: no noise level, no sampler
    assert set(images) == set(expected)
    scalars = events.Tags()["scalars"]
    assert {"val/context_bits", "val/order_bits"} <= set(scalars)
    assert [e.step for e in events.Scalars("val/context_bits")] == [10, 20]
    for tag in expected:
        shown = events.Images(tag)
        assert [e.step for e in shown] == [10, 20]  # each validation, not the sanity check
        assert shown[-1].width > 300 and shown[-1].height > 100
        assert shown[-1].encoded_image_string[:8] == b"\x89PNG\r\n\x1a\n"


def test_figures_can_be_turned_off(tmp_path):
    main(["fit", *TINY, f"--trainer.default_root_dir={tmp_path}", "--trainer.max_steps=4",
          "--trainer.val_check_interval=4", "--trainer.check_val_every_n_epoch=null", "--dashboard.figures=false"])
    events = _events(tmp_path / "lightning_logs" / "version_0")
    assert not events.Tags()["images"] and "final/val/loss" in events.Tags()["scalars"]


def test_denoising_trajectory_ends_in_the_sample(tiny_ckpt):
    from cdlm.checkpoints import load_checkpoint
    from cdlm.dashboard import denoising_trajectory

    model, _ = load_checkpoint(str(tiny_ckpt))
    states, final = denoising_trajectory(model, "continuous")
    gen = model.sample_ids(4, seed=0)
    assert states.shape == (gen.nfe, model.hparams.seq_len)
    longest = gen.ids[(gen.ids != model.pad_id).sum(1).argmax()]
    assert torch.equal(final, longest)
    assert torch.equal(states[-1], final)  # the last call's argmax is the sample (rounding by logits)


def test_a_sampler_the_figure_cannot_run_stops_the_fit_at_once(tmp_path, capsys):
    from tests.cdlm.conftest import fails

    err = fails(capsys, "fit", *TINY, f"--trainer.default_root_dir={tmp_path}", "--trainer.max_steps=2",
                "--dashboard.methods=[no_such_solver]")
    assert "no_such_solver" in err
