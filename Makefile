# Two commands on a fresh machine: `make demo` and `make test`. Both create .venv when it is
# missing and (re)install the package with every extra whenever pyproject.toml changes.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.jndplug-installed

.PHONY: demo test bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[all,dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m jndplug demo

test: $(STAMP)
	$(PY) -m pytest -q

bench: $(STAMP)
	$(PY) -m jndplug.bench estimator --parts speed --out bench-estimator

clean:
	rm -rf $(VENV) jndplug-demo bench-estimator build *.egg-info
