"""Models shared the Hub's way (`cdlm.hub`): a model folder with a model card round-trips, loads
from a hub id through a hub cache laid out here (offline: no network), is pushed through the
Hub's API, keeps the user's permissions, and folders written before the card still load."""

import json
import os
import stat

import pytest
import torch

import cdlm
from cdlm import AutoregressiveLM, DiffusionLM
from cdlm.hub import FILES, is_hub_id

SHA = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture(scope="module")
def model(tiny_ckpt):
    return cdlm.load(str(tiny_ckpt))


def test_save_pretrained_writes_a_folder_with_a_model_card_that_round_trips(model, tmp_path):
    folder = model.save_pretrained(tmp_path / "m", metrics={"validity": 0.5})
    assert sorted(p.name for p in folder.iterdir()) == sorted(FILES)
    card = (folder / "README.md").read_text()
    assert card.startswith("---\n") and "library_name: cdlm" in card and "- continuous" in card
    assert "training steps: 30" in card and "| validity | 0.5 |" in card and '"embed_dim": 8' in card
    again = DiffusionLM.from_pretrained(str(folder))
    assert again.training_steps == 30 and again.data_hparams == model.data_hparams
    assert torch.equal(again.sample_ids(3, seed=1).ids, model.sample_ids(3, seed=1).ids)


def test_every_file_written_follows_the_umask(model, tmp_path):
    old = os.umask(0o022)
    try:
        folder = model.save_pretrained(tmp_path / "m")
    finally:
        os.umask(old)
    assert {stat.S_IMODE(p.stat().st_mode) for p in folder.iterdir()} == {0o644}


def cache_with(model, tmp_path, repo="someone/tiny-cdlm"):
    """A hub cache as huggingface_hub lays it out: refs/main names a snapshot holding the files."""
    root = tmp_path / "hub" / ("models--" + repo.replace("/", "--"))
    model.save_pretrained(root / "snapshots" / SHA)
    (root / "refs").mkdir(parents=True)
    (root / "refs" / "main").write_text(SHA)
    return tmp_path / "hub"


def test_a_hub_id_loads_from_the_hub_cache_offline(model, tmp_path, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    cache = cache_with(model, tmp_path)
    loaded = cdlm.load("someone/tiny-cdlm", cache_dir=str(cache))
    assert isinstance(loaded, DiffusionLM)
    assert torch.equal(loaded.sample_ids(2, seed=0).ids, model.sample_ids(2, seed=0).ids)
    assert isinstance(DiffusionLM.from_pretrained("someone/tiny-cdlm", revision=SHA, cache_dir=str(cache)), DiffusionLM)
    with pytest.raises(ValueError, match="neither a local file or folder nor a model the hub gives at revision 'v9'"):
        cdlm.load("someone/tiny-cdlm", revision="v9", cache_dir=str(cache))
    with pytest.raises(ValueError, match="holds a DiffusionLM, not a AutoregressiveLM"):
        AutoregressiveLM.from_pretrained("someone/tiny-cdlm", cache_dir=str(cache))


def test_the_command_line_samples_a_hub_id(model, tmp_path, monkeypatch, capsys):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache_with(model, tmp_path)))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", os.environ["HF_HUB_CACHE"])
    from cdlm.cli import main

    main(["sample", "--model", "someone/tiny-cdlm", "--num_samples", "2"])
    assert capsys.readouterr().out.count("\n") == 2  # two samples, one a line (a 30-step model may write empty ones)


def test_push_to_hub_creates_the_repo_and_uploads_the_folder(model, monkeypatch):
    calls = {}

    class FakeApi:
        def __init__(self, token=None):
            calls["token"] = token

        def create_repo(self, repo_id, private=None, exist_ok=False):
            calls["repo"] = (repo_id, private, exist_ok)

        def upload_folder(self, repo_id, folder_path, revision=None, commit_message=None):
            calls["files"] = sorted(os.listdir(folder_path))
            calls["config"] = json.loads(open(os.path.join(folder_path, "config.json")).read())
            return "commit"

    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    assert model.push_to_hub("someone/tiny-cdlm", private=True, token="t") == "commit"
    assert calls["repo"] == ("someone/tiny-cdlm", True, True) and calls["token"] == "t"
    assert calls["files"] == sorted(FILES) and calls["config"]["cdlm_model"] == "DiffusionLM"


def test_folders_written_before_the_card_still_load(model, tmp_path):
    folder = model.save_pretrained(tmp_path / "old")
    (folder / "README.md").unlink()
    config = json.loads((folder / "config.json").read_text())
    del config["training_steps"]
    (folder / "config.json").write_text(json.dumps(config))
    old = cdlm.load(str(folder))
    assert old.training_steps is None and torch.equal(old.sample_ids(2, seed=0).ids, model.sample_ids(2, seed=0).ids)


def test_hub_ids_and_paths_are_told_apart():
    assert is_hub_id("someone/tiny-cdlm") and is_hub_id("org/model.v2")
    assert not any(is_hub_id(p) for p in ("runs/x/last.ckpt", "a/b/c", "last.ckpt", "./m", "../m", "/abs"))


def test_the_front_door_is_top_level():
    assert cdlm.load and cdlm.evaluate and cdlm.diagnose and cdlm.diagnose_heldout and cdlm.heldout_data
    assert cdlm.Request().anchors is None and cdlm.SamplerConfig().method == "ddim"
