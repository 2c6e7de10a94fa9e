"""Thin adapters that plug jndplug into training frameworks, imported as ``jndplug.integrations``.

Each framework has its own subpackage; importing one imports that framework. The jndplug core
never imports them.

The folder stands at the top of the repository and is installed under ``jndplug`` (the
``package-dir`` mapping in pyproject.toml), so ``jndplug.integrations`` is its one import path.
From a source checkout, ``import integrations.basicsr`` would run the adapter a second time under
another name and hook BasicSR twice: it is refused.
"""

if __name__ != "jndplug.integrations":
    raise ImportError(f"the jndplug adapters are imported as jndplug.integrations, not as {__name__}: "
                      "install jndplug (pip install -e .) and write e.g. `import jndplug.integrations.basicsr`")
