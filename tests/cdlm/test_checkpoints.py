"""Checkpoints are data: hostile files run nothing, damaged ones get one line, exports round-trip."""

import io
import pickle
from pathlib import Path

import pytest
import torch

from cdlm import AutoregressiveLM, DiffusionLM, MaskedDiffusionLM
from cdlm.checkpoints import build, load_checkpoint, load_pretrained
from cdlm.cli import main
from cdlm.data.corpus import corpus_texts
from cdlm.data.tokenizer import train_tokenizer
from cdlm.hub import export
from tests.cdlm.conftest import fails


def _with(ckpt_path, tmp_path, name, edit) -> Path:
    ckpt = torch.load(ckpt_path, weights_only=True)
    edit(ckpt)
    out = tmp_path / name
    torch.save(ckpt, out)
    return out


class _Payload:  # a classic pickle bomb: unpickling calls os.system
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os

        return os.system, (f"touch {self.marker}",)


def _hostile(tiny_ckpt, tmp_path, marker):
    touch = ["touch", str(marker)]
    shell = f"touch {marker}"
    edits = {
        # top level: the class the file names
        "class_path_popen": lambda c: (c.pop("cdlm_model", None), c.update(class_path="subprocess.Popen"),
                                       c["hyper_parameters"].update(args=touch)),
        "registry_name_os_system": lambda c: c.update(cdlm_model="os.system"),
        "cdlm_lookalike": lambda c: (c.pop("cdlm_model", None), c.update(class_path="cdlm.cli.subprocess.Popen")),
        # inside the hyperparameters
        "hparams_class_path": lambda c: (c.pop("cdlm_model", None), c.pop("class_path", None),
                                         c["hyper_parameters"].update(_class_path="os.system", command=shell)),
        "hparams_instantiator": lambda c: c["hyper_parameters"].update(_instantiator="os.system"),
        "hparams_nested_class": lambda c: c["hyper_parameters"].update(
            tokenizer_json={"class_path": "subprocess.Popen", "init_args": {"args": touch}}),
        "hparams_unknown_key": lambda c: c["hyper_parameters"].update(__init__=shell),
    }
    files = {name: _with(tiny_ckpt, tmp_path, f"{name}.ckpt", edit) for name, edit in edits.items()}
    bomb = tmp_path / "pickle_bomb.ckpt"
    buffer = io.BytesIO()
    pickle.dump({"state_dict": {}, "hyper_parameters": {"x": _Payload(marker)}}, buffer)
    bomb.write_bytes(buffer.getvalue())
    files["pickle_bomb"] = bomb
    return files


def test_a_hostile_checkpoint_runs_nothing(tiny_ckpt, tmp_path, capsys):
    marker = tmp_path / "pwned"
    for name, path in _hostile(tiny_ckpt, tmp_path, marker).items():
        for command in (["sample", "--ckpt_path", str(path), "--num_samples", "1"],
                        ["eval", "--ckpt_path", str(path), "--num_samples", "1", "--nll_batches", "0"]):
            message = fails(capsys, *command)
            assert not marker.exists(), f"{name} ran a command through {command[0]}"
            assert str(path) in message, (name, message)
        with pytest.raises(ValueError):
            load_checkpoint(str(path))
        with pytest.raises(ValueError):
            DiffusionLM.load_from_checkpoint(str(path))
        assert not marker.exists(), name


def test_a_hostile_checkpoint_resumes_nothing(tiny_ckpt, tmp_path, capsys):
    marker = tmp_path / "pwned"
    files = _hostile(tiny_ckpt, tmp_path, marker)
    for name in ("pickle_bomb", "hparams_instantiator", "class_path_popen"):
        fails(capsys, "fit", "--data.num_examples=64", "--trainer.max_steps=1", f"--trainer.default_root_dir={tmp_path}",
              "--ckpt_path", str(files[name]))
        assert not marker.exists(), name


@pytest.mark.parametrize("damage, expected", [
    (lambda c: c["state_dict"].pop("net.head.weight"), "lacks 'net.head.weight'"),
    (lambda c: c["state_dict"].update(extra=torch.zeros(2)), "unexpected tensor 'extra'"),
    (lambda c: c["state_dict"].update({"net.head.bias": torch.zeros(3)}), "'net.head.bias' of shape (3,)"),
    (lambda c: c["hyper_parameters"]["network"].update(width=64), "hyperparameters do not match its weights"),
    (lambda c: c["state_dict"].update({"net.head.bias": "text"}), "holds a str"),
    (lambda c: c.update(hyper_parameters=[1, 2]), "not a cdlm checkpoint"),
], ids=["missing", "extra", "shape", "hparams", "not-a-tensor", "malformed-hparams"])
def test_a_damaged_checkpoint_is_one_line(tiny_ckpt, tmp_path, capsys, damage, expected):
    path = _with(tiny_ckpt, tmp_path, "damaged.ckpt", damage)
    assert expected in fails(capsys, "sample", "--ckpt_path", str(path))


def test_checkpoints_of_the_previous_format_still_load(tiny_ckpt, tmp_path):
    # before the registry, checkpoints named their class by a dotted path only
    old = _with(tiny_ckpt, tmp_path, "old.ckpt", lambda c: (c.pop("cdlm_model"), c.update(class_path="cdlm.diffusion.DiffusionLM"),
                                                            c["hyper_parameters"].update(_class_path="cdlm.DiffusionLM")))
    model, _ = load_checkpoint(str(old))
    assert torch.equal(model.sample_ids(2, seed=1).ids, load_checkpoint(str(tiny_ckpt))[0].sample_ids(2, seed=1).ids)


def test_export_round_trip(tiny_ckpt, tiny_ar_ckpt, tmp_path, capsys):
    for ckpt, cls in ((tiny_ckpt, DiffusionLM), (tiny_ar_ckpt, None)):
        folder = export(str(ckpt), str(tmp_path / Path(ckpt).parent.parent.name))
        assert sorted(p.name for p in folder.iterdir()) == ["README.md", "config.json", "model.safetensors", "tokenizer.json"]
        original, data = load_checkpoint(str(ckpt))
        exported, exported_data = load_pretrained(str(folder))
        assert exported_data == data
        state, again = original.state_dict(), exported.state_dict()
        assert state.keys() == again.keys() and all(torch.equal(state[k], again[k]) for k in state)
        assert exported.tokenizer.to_str() == original.tokenizer.to_str()
        assert torch.equal(original.sample_ids(3, seed=2).ids, exported.sample_ids(3, seed=2).ids)
    assert isinstance(DiffusionLM.from_pretrained(str(tmp_path / Path(tiny_ckpt).parent.parent.name)), DiffusionLM)
    with pytest.raises(ValueError, match="not a DiffusionLM"):
        DiffusionLM.from_pretrained(str(tmp_path / Path(tiny_ar_ckpt).parent.parent.name))


def test_export_and_sample_from_the_command_line(tiny_ckpt, tmp_path, capsys):
    folder = tmp_path / "exported"
    main(["export", "--ckpt_path", str(tiny_ckpt), "--out", str(folder)])
    capsys.readouterr()
    main(["sample", "--ckpt_path", str(tiny_ckpt), "--num_samples", "3", "--seed", "4"])
    from_ckpt = capsys.readouterr().out
    main(["sample", "--model", str(folder), "--num_samples", "3", "--seed", "4"])
    assert capsys.readouterr().out == from_ckpt
    main(["eval", "--model", str(folder), "--num_samples", "4", "--nll_batches", "1"])
    assert '"validity"' in capsys.readouterr().out
    before = (folder / "model.safetensors").read_bytes()
    assert "already holds" in fails(capsys, "export", "--ckpt_path", str(tiny_ckpt), "--out", str(folder))
    assert (folder / "model.safetensors").read_bytes() == before
    (folder / "config.json").write_text("{not json")
    assert "not valid JSON" in fails(capsys, "sample", "--model", str(folder))
    (folder / "config.json").write_text('{"cdlm_model": "os.system", "hyper_parameters": {}}')
    assert "not a cdlm model" in fails(capsys, "sample", "--model", str(folder))
    assert "lacks config.json" in fails(capsys, "sample", "--model", str(tmp_path))


@pytest.mark.parametrize("cls", [DiffusionLM, MaskedDiffusionLM, AutoregressiveLM])
def test_hyperparameters_from_before_the_network_group_build_the_same_model(cls):
    """Checkpoints written before `network` (and the masked model's `training`) existed hold
    those fields flat, the masked schedule and the attribute vocabulary under their old names."""
    tok = train_tokenizer(corpus_texts(50, seed=0), kind="word").to_str()
    masked = {"training": {"schedule": "mask_cosine", "objective": "llada"}} if cls is MaskedDiffusionLM else {}
    model = cls(tokenizer_json=tok, seq_len=12, network={"width": 32, "depth": 1, "heads": 2, "loops": 2,
                                                         "positions": "alibi"}, val_samples=0,
                attribute_names=["area=riverside", "food=french"], **masked)
    grouped = dict(model.hparams)
    flat = {**{k: v for k, v in grouped.items() if k not in ("network", "attribute_names")}, **grouped["network"],
            "attributes": grouped["attribute_names"]}  # the attribute vocabulary's old name
    if masked:
        del flat["training"]
        flat.update(schedule="cosine", objective="llada")
    old = build(cls.__name__, flat, model.state_dict(), "old.ckpt")
    assert old.network == model.network and dict(old.hparams) == grouped
    assert all(torch.equal(a, b) for a, b in zip(old.state_dict().values(), model.state_dict().values()))


def test_the_registry_imports_models_only_when_a_name_is_looked_up():
    """No import circle: importing checkpoints (and `cdlm.registry`) loads no model; the first
    lookup of a name loads them all, so a fresh process can read a checkpoint by name alone."""
    import subprocess
    import sys

    golden = Path(__file__).resolve().parents[1] / "data" / "golden_diffusion.ckpt"
    script = ("import sys\nfrom cdlm.checkpoints import load_checkpoint\n"
              "assert not any(m.startswith('cdlm.models.') for m in sys.modules), "
              "sorted(m for m in sys.modules if m.startswith('cdlm.models'))\n"
              f"model, _ = load_checkpoint({str(golden)!r})\nprint(type(model).__name__)")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["DiffusionLM"]
