"""The README reads like a library's: one screen, then usage; its commands match the configs."""

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


def test_the_first_screen_fits_in_60_lines():
    first = README.split("\n## ", 1)[0]
    assert len(first.splitlines()) <= 60
    assert "cdlm fit --config configs/quickstart.yaml" in first and "python -m pytest tests" in first
    assert "| model |" in first  # one results table


def test_sample_paths_are_where_the_configs_write_last_ckpt():
    for path in sorted((ROOT / "configs").glob("*.yaml")):
        config = yaml.safe_load(path.read_text())
        checkpoint = next(c["init_args"] for c in config["trainer"]["callbacks"] if c["class_path"].endswith("ModelCheckpoint"))
        logger = config["trainer"]["logger"]["init_args"]
        folder = Path(checkpoint["dirpath"])
        assert folder != Path(logger["save_dir"]) / logger["name"], path  # Lightning warns when they share one
        for mentioned in re.findall(r"--ckpt_path (runs/\S+)", path.read_text()):
            assert Path(mentioned) == folder / "last.ckpt", (path, mentioned)
    for mentioned in re.findall(r"(runs/quickstart\w*/\S*last\.ckpt)", README):
        assert mentioned.split("/")[2] == "checkpoints", mentioned


def test_every_config_and_doc_the_readme_names_exists():
    for name in set(re.findall(r"configs/[\w*]+\.yaml", README)) - {"configs/NAME.yaml"}:
        assert list(ROOT.glob(name)), name
    for name in set(re.findall(r"\(((?:docs|notebooks)/[\w./]+)\)", README)):
        assert (ROOT / name).is_file(), name
    assert "## The seed's claims, measured" in (ROOT / "docs" / "results.md").read_text()


def test_no_internal_issue_numbers():
    for path in [ROOT / "README.md", *(ROOT / "docs").glob("*.md"), *(ROOT / "configs").glob("*.yaml"),
                 *(ROOT / "cdlm").rglob("*.py"), *(ROOT / "benchmarks").glob("*.py"), *(ROOT / "tests").rglob("*.py")]:
        text = path.read_text()
        assert not re.search(r"\bissues? #?\d+|\(#\d+\)", text, re.IGNORECASE), path
