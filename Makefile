# One-command set-up and the everyday commands. The test command is the README's (CI runs the same via .ci/run).
PY ?= python3
VENV ?= .venv
BIN = $(VENV)/bin

.PHONY: setup demo test report clean

setup:            ## fresh virtual environment with evalkit and its test tools
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "torch==2.14.1" "torchvision==0.29.1"
	$(BIN)/python -m pip install -q -e ".[dev]"
	$(BIN)/python -m pip check

demo:             ## the offline demo (random weights, labelled as such)
	HF_HUB_OFFLINE=1 $(BIN)/python -m evalkit hydra.run.dir=outputs/demo

test:
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q

report:           ## card-layout tables and plots of every run under outputs/
	$(BIN)/python -m evalkit.report outputs --out outputs/report

clean:
	rm -rf outputs multirun .pytest_cache
