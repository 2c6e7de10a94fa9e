"""Package discovery for the `integrations/` -> `jndplug.integrations` mapping.

Everything else lives in pyproject.toml. The mapping needs code because setuptools' automatic
discovery cannot rename a top-level folder, and listing subpackages by hand goes stale.
"""

from setuptools import find_packages, setup


def _under(prefix: str, folder: str) -> list[str]:
    return [prefix, *(f"{prefix}.{name}" for name in find_packages(folder))]


setup(
    packages=_under("jndplug", "jndplug") + _under("jndplug.integrations", "integrations"),
    package_dir={"jndplug": "jndplug", "jndplug.integrations": "integrations"},
)
