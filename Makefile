# rodimus-lab — the two commands of the README: `make demo` and `make test`.
# Each creates .venv (if needed) and installs what it needs. On a machine without an NVIDIA
# GPU the CPU build of torch is installed first, pinned exactly (a range would pull a
# multi-GB CUDA build); set TORCH_INDEX=https://download.pytorch.org/whl/cpu where PyPI's
# default torch wheel is the CUDA one and no local CPU wheel is configured.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH_CPU ?= torch==2.13.0
TRITON_CPU ?= triton==3.7.1
TORCH_INDEX ?=
PYTEST_ARGS ?=

HAS_GPU := $(shell command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1 && echo 1)

.PHONY: install demo test lab clean

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
ifneq ($(HAS_GPU),1)
	$(BIN)/python -m pip install -q $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX) --extra-index-url https://pypi.org/simple) $(TORCH_CPU)
	$(BIN)/python -m pip install -q $(TRITON_CPU)
endif
	$(BIN)/python -m pip install -q -e ".[lab,test]"
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $@

install: $(VENV)/.installed

demo: install
	$(BIN)/rodimus-lab demo

test: install
	HF_DATASETS_OFFLINE=1 HF_HUB_OFFLINE=1 $(BIN)/python -m pytest $(PYTEST_ARGS)

# JupyterLab reads the project's defaults from jupyter/ (read-only; see jupyter/README.md) and keeps your
# own settings and workspaces where it always does (~/.jupyter), never inside the repository.
lab: install
	JUPYTER_CONFIG_PATH=$(CURDIR)/jupyter$(if $(JUPYTER_CONFIG_PATH),:$(JUPYTER_CONFIG_PATH)) \
		$(BIN)/jupyter lab $(if $(filter 0,$(shell id -u)),--allow-root) notebooks/

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
