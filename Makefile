# One-command set-up and the everyday commands. The test command is the README's (CI runs the same via .ci/run).
PY ?= python3
VENV ?= .venv
BIN = $(VENV)/bin
PY_REF ?= python3.11
VENV_REF ?= build/venv-reference

.PHONY: setup setup-reference demo test test-reference report clean

setup:            ## fresh virtual environment with evalkit and its test tools (the README's two set-up commands)
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q -e ".[test]"
	$(BIN)/python -m pip check

setup-reference:  ## the reference environment (Python 3.11, numpy 1.x, frechet-audio-distance + laion-clap + kadtk + fadtk)
	$(PY_REF) -m venv $(VENV_REF)
	$(VENV_REF)/bin/python -m pip install -q -e ".[dev]"
	$(VENV_REF)/bin/python -m pip check
	$(VENV_REF)/bin/python -m pip install -q --no-deps "kadtk==1.1.0"  # pins torch<2.6: its deps come from the extra
	$(VENV_REF)/bin/python -m pip install -q --no-deps "fadtk==1.1.0"  # would pull transformers 4.x: deps from the extra
	$(VENV_REF)/bin/python -m pip install -q --no-deps "torchopenl3==1.0.1"  # pins resampy<0.3 (pkg_resources)

demo:             ## the offline demo (random weights, labelled as such)
	HF_HUB_OFFLINE=1 $(BIN)/python -m evalkit hydra.run.dir=outputs/demo

test:             ## the whole suite (the reference tests skip, naming the extra)
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q

test-reference:   ## the parity tests, in the reference environment
	HF_HUB_OFFLINE=1 $(VENV_REF)/bin/python -m pytest -q -m reference

report:           ## card-layout tables and plots of every run under outputs/
	$(BIN)/python -m evalkit.report outputs --out outputs/report

clean:
	rm -rf outputs multirun .pytest_cache
