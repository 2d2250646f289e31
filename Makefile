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
	$(BIN)/python -m pip install --quiet -e ".[dev,tflite,docs,plots,images,compare,jax,tensorboard,ray]"
	touch $(STAMP)

install: $(STAMP)

data: install
	$(BIN)/keras-dynhp data fetch

# The headline through the CLI: DynHP on Fashion-MNIST under a 1433 KiB training budget,
# delivering a network of at most 250 KB (model budget), with the library's defaults
# (size penalty, cosine learning rate): model, compact model, .tflite, history, plots and
# a summary table against a dense Keras MLP of the same shape trained as long.
# --overwrite: `make demo` can be run again.
demo: data
	$(BIN)/keras-dynhp train --dataset fashion_mnist --mode dynhp --epochs 8 \
		--model-budget 250KB --output runs/demo --overwrite

# The core tests run on both Keras backends; the rest (CLI, experiments, docs) on TensorFlow.
CORE_TESTS := tests/test_gates.py tests/test_layers.py tests/test_pruning.py tests/test_surgery.py \
	tests/test_batch_size.py tests/test_penalty.py tests/test_budget.py tests/test_memory.py tests/test_data.py tests/test_models.py \
	tests/test_training.py tests/test_callbacks.py tests/test_export.py tests/test_litert.py \
	tests/test_convert.py tests/test_conv.py tests/test_channels.py tests/test_skip.py tests/test_graph.py

test: data
	KERAS_BACKEND=tensorflow $(BIN)/python -m pytest keras_dynhp tests
	KERAS_BACKEND=jax $(BIN)/python -m pytest $(CORE_TESTS)

# The documentation site (tests/test_docs_site.py builds it too, as part of `make test`).
docs: install
	$(BIN)/mkdocs build --strict --site-dir build/site

clean:
	rm -rf $(VENV) runs build *.egg-info
