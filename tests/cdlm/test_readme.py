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


def test_configs_are_composed_of_pieces_and_name_their_checkpoints():
    """Each config takes its trainer (and the quickstart's its model and data) from configs/trainer,
    configs/model and configs/data; the run, named after the file, checkpoints in runs/NAME/checkpoints."""
    tops = sorted((ROOT / "configs").glob("*.yaml"))
    assert len(tops) >= 12
    for path in tops:
        config = yaml.safe_load(path.read_text())
        assert isinstance(config["trainer"], str) and config["trainer"].startswith("trainer/"), path
        for section in ("trainer", "model", "data"):
            if isinstance(config[section], str):
                piece = yaml.safe_load((path.parent / config[section]).read_text())
                assert isinstance(piece, dict), (path, section)
                assert "logger" not in piece and "callbacks" not in piece, (path, section)  # named by the run
        for mentioned in re.findall(r"--ckpt_path (runs/\S+)", path.read_text()):
            assert Path(mentioned) == Path("runs") / path.stem / "checkpoints" / "last.ckpt", (path, mentioned)
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


def test_the_design_layout_names_every_module_and_folder():
    """docs/design.md's layout is the tree: each cdlm module and subpackage, and each config folder."""
    design = (ROOT / "docs" / "design.md").read_text()
    layout = design.split("```", 2)[1]
    names = {p.name for p in (ROOT / "cdlm").iterdir() if p.suffix == ".py" and p.name != "__init__.py"}
    names |= {p.name + "/" for p in (ROOT / "cdlm").iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    names |= {p.name + "/" for p in (ROOT / "configs").iterdir() if p.is_dir()}
    for name in sorted(names):
        assert re.search(rf"(^|\s|\(){re.escape(name)}", layout, re.MULTILINE), name
