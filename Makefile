# The two commands of the README: `make demo` (main job) and `make test`.
# Each creates the virtual environment, installs the package and obtains the data itself.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: install data demo test docs clean

$(STAMP): setup.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev,tflite,docs,plots,compare]"
	touch $(STAMP)

install: $(STAMP)

data: install
	$(BIN)/python -m keras_dynhp.datasets fetch

demo: data
	$(BIN)/python examples/demo.py --output runs/demo

test: data
	$(BIN)/python -m pytest keras_dynhp tests

# The documentation site (tests/test_docs_site.py builds it too, as part of `make test`).
docs: install
	$(BIN)/mkdocs build --strict --site-dir build/site

clean:
	rm -rf $(VENV) runs build *.egg-info
