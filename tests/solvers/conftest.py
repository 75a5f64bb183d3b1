import sys
from pathlib import Path

# pytest puts tests/ on sys.path (rootdir conftest, no __init__.py), where tests/solvers would
# shadow the real package as a namespace package unless the repo root is importable too.
_ROOT = str(Path(__file__).resolve().parents[2])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)
