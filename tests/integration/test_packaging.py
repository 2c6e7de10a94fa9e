"""`integrations/` is installed as `jndplug.integrations`, editable and as a regular wheel."""

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from conftest import fresh_python

ROOT = Path(__file__).resolve().parents[2]


def test_editable_install_maps_integrations():
    import jndplug.integrations

    assert Path(jndplug.integrations.__file__).resolve() == ROOT / "integrations" / "__init__.py"


def test_wheel_contains_integrations_under_jndplug(tmp_path):
    # build from a clean copy: setuptools leaves build/ behind, and stale files there leak into wheels
    src = tmp_path / "src"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(".venv", ".git", "build", "*.egg-info", "__pycache__",
                                                             "jndplug-demo", "runs"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                    "-w", str(tmp_path), str(src)], check=True, capture_output=True, timeout=300)
    wheel = next(tmp_path.glob("jndplug-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {p.relative_to(ROOT).as_posix() for p in (ROOT / "integrations").rglob("*.py")}
    assert expected, "integrations/ has no Python files"
    for rel in expected:
        assert "jndplug/" + rel in names, f"{rel} missing from the wheel"
    assert not any(n.startswith("integrations/") for n in names)
    assert "jndplug/target.py" in names
    for weights in (ROOT / "jndplug" / "weights").glob("*.safetensors"):
        assert f"jndplug/weights/{weights.name}" in names, "shipped weights missing from the wheel"


def test_source_checkout_import_path_is_refused():
    # `integrations.basicsr` from the repository root would hook BasicSR a second time
    proc = subprocess.run([sys.executable, "-c", "import integrations"], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode != 0
    assert "imported as jndplug.integrations, not as integrations" in proc.stderr


def test_every_package_folder_is_installed():
    import tomllib

    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "jndplug").rglob("__init__.py")
             if not p.is_relative_to(ROOT / "jndplug" / "integrations")}  # a development link, if any
    found |= {".".join(("jndplug", *p.parent.relative_to(ROOT).parts)) for p in (ROOT / "integrations").rglob("__init__.py")}
    assert listed == found, f"pyproject.toml [tool.setuptools] packages: missing {sorted(found - listed)}, " \
                            f"stale {sorted(listed - found)}"


def test_import_and_jndtarget_need_neither_matplotlib_nor_scikit_image():
    # a user who only trains with JNDTarget installs the core dependencies: the figures and the
    # demo's photographs are the viz extra
    # the default target (bounded by the analytic profile) and the one bounded by the estimator's map
    code = ("import sys, torch\nimport jndplug\nt = jndplug.JNDTarget()\nt(torch.rand(1, 3, 32, 32))\n"
            "from jndplug.spec import TargetSpec\n"
            "jndplug.JNDTarget.from_spec(TargetSpec(bound='estimator'))(torch.rand(1, 3, 32, 32))\n"
            "print([m for m in ('matplotlib', 'skimage') if m in sys.modules])")
    assert fresh_python(code).splitlines()[-1] == "[]"


def test_core_dependencies_and_the_extras_that_name_the_optional_modules():
    import re
    import tomllib

    from jndplug.errors import OPTIONAL_MODULES

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]

    def names(requirements):
        return {re.split(r"[<>=\[;]", r, maxsplit=1)[0].strip().lower() for r in requirements}

    core = names(project["dependencies"])
    for module, (dist, extra) in OPTIONAL_MODULES.items():
        assert dist not in core, f"{dist} is a core dependency, yet optional ({module})"
        assert dist in names(extras[extra]), f"the {extra} extra does not install {dist}"
    assert "viz" in extras["all"][0]


def test_what_the_core_imports_at_load_time_is_a_core_dependency():
    # a module-level import of a package that only comes with some other package (pyyaml with
    # basicsr and timm) breaks `jndplug` on an install that lacks it; jndplug/study needs the study
    # extra and integrations/ its framework, so both are left out
    import ast
    import importlib.metadata
    import re
    import tomllib

    declared = {re.split(r"[<>=\[;]", r, maxsplit=1)[0].strip().lower().replace("_", "-")
                for r in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]}
    distributions = importlib.metadata.packages_distributions()
    missing = set()
    for path in (ROOT / "jndplug").rglob("*.py"):
        if path.is_relative_to(ROOT / "jndplug" / "study") or path.is_relative_to(ROOT / "jndplug" / "integrations"):
            continue
        for node in ast.parse(path.read_text()).body:
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 else []
            for top in {n.split(".")[0] for n in names} - set(sys.stdlib_module_names) - {"jndplug", "__future__"}:
                dists = {d.lower().replace("_", "-") for d in distributions.get(top, [top])}
                if not dists & declared:
                    missing.add(f"{top} ({path.relative_to(ROOT)})")
    assert not missing, f"imported at load time but not in pyproject.toml dependencies: {sorted(missing)}"
