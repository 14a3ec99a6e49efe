"""The package's layers: the core never imports the chapter helpers or the book, and works without the book extra.

Layers, bottom to top: the core (everything not named below), ``lsi.experiments`` (the chapters' helpers),
``lsi.book`` (the book tooling, behind the ``book`` extra), ``lsi.cli``. A module may import only from its own
layer and the ones below it.
"""
import ast
import subprocess
import sys
from pathlib import Path

import lsi

PACKAGE = Path(lsi.__file__).parent
LAYERS = ["core", "experiments", "book", "cli"]
BOOK_EXTRA = ("altair", "IPython", "papermill", "nbformat", "vl_convert", "jupyter_book")


def layer(module: str) -> str:
    part = module.split(".")[1] if module.count(".") else ""
    return part if part in LAYERS else "core"


def imports(path: Path) -> set[str]:
    """Every absolute ``lsi...`` module a file imports, top level or inside a function."""
    module = "lsi." + ".".join(path.relative_to(PACKAGE).with_suffix("").parts).removesuffix(".__init__")
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = module.split(".")[: len(module.split(".")) - node.level + (path.name == "__init__.py")]
                base = ".".join(parent + ([base] if base else []))
            found |= {base} | {f"{base}.{alias.name}" for alias in node.names}
    return {name for name in found if name == "lsi" or name.startswith("lsi.")}


def test_no_module_imports_a_layer_above_its_own():
    upward = []
    for path in PACKAGE.rglob("*.py"):
        module = "lsi." + ".".join(path.relative_to(PACKAGE).with_suffix("").parts)
        for name in imports(path):
            if name.startswith("lsi.") and LAYERS.index(layer(name)) > LAYERS.index(layer(module)):
                upward.append(f"{module} imports {name}")
    assert not upward, "\n".join(upward)


def test_the_core_and_the_chapter_helpers_import_without_the_book_extra():
    """Import every module below the book layer with the book extra made unimportable."""
    modules = sorted("lsi." + ".".join(p.relative_to(PACKAGE).with_suffix("").parts).removesuffix(".__init__")
                     for p in PACKAGE.rglob("*.py") if layer("lsi." + ".".join(p.relative_to(PACKAGE).parts))
                     in ("core", "experiments"))
    script = f"""
import importlib, importlib.abc, sys
class Blocked(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in {BOOK_EXTRA!r}:
            raise ImportError(f'{{name}} is part of the book extra')
sys.meta_path.insert(0, Blocked())
for module in {modules!r}:
    importlib.import_module(module)
leaked = sorted(m for m in sys.modules if m.split('.')[0] in {BOOK_EXTRA!r})
assert not leaked, leaked
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
