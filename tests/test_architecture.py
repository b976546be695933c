"""The layers of docs/architecture.md hold: imports point down, the torch-free layers import without torch,
the variant registry and the config name the same variants, and the module map lists every module."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path
from typing import get_args

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "mitp"
# layer -> rank: a module may import from a lower rank, or from its own layer; never sideways or up
RANKS = {
    "__init__": 0, "errors": 0, "resources": 0,
    "files": 1,
    "config": 2, "runtime": 2,
    "data": 3, "report": 3, "serve": 3, "score": 3,
    "model": 4,
    "train": 5,
    "ship": 6,
    "cli": 7,
}
TORCH_FREE = ("files", "config", "runtime", "report", "serve", "score")


def modules() -> dict[str, Path]:
    """Dotted name -> file of every module under mitp/."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def layer(module: str) -> str:
    parts = module.split(".")
    return "__init__" if len(parts) == 1 else parts[1]


def imported(module: str, path: Path) -> set[str]:
    """Every mitp module that `module` imports, at the top or inside a function, relative imports resolved."""
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    targets = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets |= {alias.name for alias in node.names if alias.name.split(".")[0] == "mitp"}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = ".".join(package[: len(package) - node.level + 1] + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            if base.split(".")[0] == "mitp":
                targets.add(base)
    return targets


def test_imports_point_down_the_layers():
    wrong = []
    for module, path in modules().items():
        here = layer(module)
        assert here in RANKS, f"{module}: layer {here!r} is not in docs/architecture.md's table (RANKS)"
        for target in imported(module, path):
            there = layer(target)
            if there != here and RANKS[there] >= RANKS[here]:
                wrong.append(f"{module} imports {target} ({here} may not import {there})")
    assert not wrong, "\n".join(wrong)


def test_the_torch_free_layers_import_without_torch():
    """With torch and transformers made unimportable, every module of the torch-free layers still imports,
    and so does the CLI (it imports its layers lazily)."""
    names = [m for m in modules() if layer(m) in TORCH_FREE and not m.endswith("__main__")] + ["mitp.cli"]
    code = (
        "import sys\n"
        "for name in ('torch', 'transformers', 'accelerate'):\n"
        "    sys.modules[name] = None  # import raises ImportError\n"
        f"import importlib\nfor name in {names!r}:\n    importlib.import_module(name)\n"
        "print('ok')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-2000:]


def test_the_registry_and_the_config_name_the_same_variants():
    from mitp.config.types import Variant
    from mitp.config.variants import VARIANTS

    assert get_args(Variant) == tuple(VARIANTS)


def test_only_the_registry_tests_a_variant_name():
    """`variant == "p-clip"` and the like belong to mitp/config/variants.py alone; everything else asks it."""
    names = "|".join(re.escape(n) for n in ("mitp", "prompts-only", "mlp-interaction", "p-clip", "linear-probe"))
    pattern = re.compile(rf"variant[\"'\)\]]*\s*(==|!=|\bin\b|\bnot in\b)\s*[(\[]?\s*[\"']({names})[\"']|[\"']({names})[\"']\s*(==|!=)\s*[\w.]*variant")
    offenders = [
        f"{path.relative_to(ROOT)}:{n}" for module, path in modules().items() if module != "mitp.config.variants"
        for n, line in enumerate(path.read_text().splitlines(), 1) if pattern.search(line)
    ]
    assert not offenders, offenders


def test_the_architecture_map_lists_every_module_and_only_those():
    text = (ROOT / "docs" / "architecture.md").read_text()
    listed = set(re.findall(r"^\| `(mitp/[\w/]+\.py)` \|", text, re.M))
    present = {str(path.relative_to(ROOT)) for path in modules().values() if not _only_a_docstring(path)}
    assert present - listed == set(), f"missing from docs/architecture.md: {sorted(present - listed)}"
    assert listed - present == set(), f"listed in docs/architecture.md but gone: {sorted(listed - present)}"


def _only_a_docstring(path: Path) -> bool:
    """A package's __init__ that only describes its layer (the layer table covers it)."""
    body = ast.parse(path.read_text()).body
    return path.name == "__init__.py" and len(body) == 1 and isinstance(body[0], ast.Expr)


def test_the_readme_map_names_every_subpackage():
    readme = (ROOT / "README.md").read_text()
    packages = sorted(p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file())
    missing = [name for name in packages if f"`mitp/{name}/`" not in readme]
    assert not missing, f"README's code map lacks {missing}"
