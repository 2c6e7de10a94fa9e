"""The layering of docs/architecture.md, checked on every import (function-level ones included)."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# bottom to top, as in docs/architecture.md: a module may import its own layer and the ones below
LAYERS = [
    ("foundation", ["jndplug", "jndplug.errors", "jndplug.basicsr_compat", "jndplug.imageio", "jndplug.artifacts",
                    "jndplug.pixels", "jndplug.settings"]),
    ("models", ["jndplug.models", "jndplug.weights"]),
    ("targets", ["jndplug.spec", "jndplug.bounds", "jndplug.tiling", "jndplug.target", "jndplug.directed", "jndplug.viz", "jndplug.metrics", "jndplug.losses",
                 "jndplug.precompute"]),
    ("data", ["jndplug.data"]),
    ("pipeline", ["jndplug.datagen", "jndplug.study", "jndplug.patches", "jndplug.training"]),
    ("integrations", ["jndplug.integrations"]),
    ("bench", ["jndplug.bench"]),
    ("cli", ["jndplug.cli", "jndplug.train_estimator"]),
]


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[0] == "integrations":
        parts.insert(0, "jndplug")
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def layer_of(module: str) -> int:
    best, level = "", None
    for i, (_, prefixes) in enumerate(LAYERS):
        for p in prefixes:
            # the package itself ("jndplug": its version and lazy names) covers no module under it
            if (module == p or (p != "jndplug" and module.startswith(p + "."))) and len(p) > len(best):
                best, level = p, i
    assert level is not None, f"{module} is on no layer: add it to docs/architecture.md and LAYERS"
    return level


def own_layer(path: Path) -> int:
    # `python -m PACKAGE` entry points run the command line, the top layer
    return len(LAYERS) - 1 if path.name == "__main__.py" else layer_of(module_name(path))


def sources():
    for folder in ("jndplug", "integrations"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            if path.is_relative_to(ROOT / "jndplug" / "integrations"):
                continue  # a development link to integrations/, not a second copy
            yield path


def jndplug_imports(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        for name in names:
            if name == "jndplug" or name.startswith("jndplug."):
                yield node.lineno, name


def test_no_module_imports_a_higher_layer():
    upward = []
    for path in sources():
        own = own_layer(path)
        for line, name in jndplug_imports(ast.parse(path.read_text(), str(path))):
            if layer_of(name) > own:
                upward.append(f"{path.relative_to(ROOT)}:{line} ({LAYERS[own][0]}) imports {name} "
                              f"({LAYERS[layer_of(name)][0]})")
    assert not upward, "imports against the layering of docs/architecture.md:\n" + "\n".join(upward)


def test_every_module_is_on_a_layer():
    for path in sources():
        own_layer(path)
