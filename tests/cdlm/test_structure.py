"""The seams stay closed: no import circle among cdlm's modules (function-level imports
included), no public signature over 12 parameters, no probe of a model's attributes outside
`cdlm/models`, and no class of `cdlm/data` over 400 lines."""

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MODULES = {".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__"): p
           for p in sorted((ROOT / "cdlm").rglob("*.py"))}


def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"))


def _imports(name: str, path: Path) -> set[str]:
    """The cdlm modules `name` imports anywhere in its file (relative imports resolved)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(_tree(path)):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([node.module] if node.module else []))
            targets = [base] + [f"{base}.{a.name}" for a in node.names]
        else:
            continue
        found |= {t for t in targets if t in MODULES and t != name}
    return found


def test_no_import_circle():
    graph = {name: _imports(name, path) for name, path in MODULES.items()}
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(name: str, path: list[str]) -> None:
        state[name] = 1
        for other in sorted(graph[name]):
            assert state.get(other) != 1, "import circle: " + " -> ".join(path[path.index(other):] + [name, other]) \
                if other in path else f"import circle through {name} -> {other}"
            if other not in state:
                visit(other, path + [name])
        state[name] = 2

    for name in graph:
        if name not in state:
            visit(name, [])


def _parameters(fn: ast.FunctionDef) -> int:
    a = fn.args
    names = [x.arg for x in (*a.posonlyargs, *a.args, *a.kwonlyargs)]
    return len(names) - (names[:1] in (["self"], ["cls"]))


def test_no_public_signature_takes_more_than_12_parameters():
    wide = []
    for name, path in MODULES.items():
        for node in _tree(path).body:
            if isinstance(node, ast.FunctionDef) and not node.name.startswith("_"):
                wide += [(f"{name}.{node.name}", _parameters(node))]
            elif isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
                wide += [(f"{name}.{node.name}.{f.name}", _parameters(f)) for f in node.body
                         if isinstance(f, ast.FunctionDef) and (f.name == "__init__" or not f.name.startswith("_"))]
    assert [(n, k) for n, k in wide if k > 12] == []


def test_no_model_is_probed_outside_the_models():
    probe = re.compile(r"\b(hasattr|getattr)\((self\.)?(model|pl_module|reference|classifier|teacher)\b")
    found = [f"{path.relative_to(ROOT)}:{i}" for name, path in MODULES.items() if not name.startswith("cdlm.models")
             for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1) if probe.search(line)]
    assert found == []


def test_no_class_of_the_data_side_is_over_400_lines():
    long = [(name, node.name, node.end_lineno - node.lineno + 1) for name, path in MODULES.items()
            if name.startswith("cdlm.data") for node in ast.walk(_tree(path))
            if isinstance(node, ast.ClassDef) and node.end_lineno - node.lineno + 1 > 400]
    assert long == []


def test_no_model_constructor_reads_a_file():
    """A model made from another's checkpoint is built by a class method (`from_teacher`,
    `from_diffusion`), or by `cdlm fit` through `arguments_from_checkpoints`: never its constructor."""
    readers = {"read_checkpoint", "load_checkpoint", "load_pretrained", "read_diffusion_model", "build", "load", "open"}
    found = []
    for name, path in MODULES.items():
        if not name.startswith("cdlm.models"):
            continue
        for cls in (n for n in ast.walk(_tree(path)) if isinstance(n, ast.ClassDef)):
            for init in (f for f in cls.body if isinstance(f, ast.FunctionDef) and f.name == "__init__"):
                calls = {c.func.attr if isinstance(c.func, ast.Attribute) else getattr(c.func, "id", "")
                         for c in ast.walk(init) if isinstance(c, ast.Call)}
                found += [f"{name}.{cls.name}: {call}" for call in sorted(calls & readers)]
    assert found == []
