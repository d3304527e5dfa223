# Two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test install clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# The embedded demo: synthetic doodles drawn on the fly, a small timm MobileNet, validation MAP@3.
demo: $(STAMP)
	@run=runs/doodles-demo-$$(date +%Y%m%d-%H%M%S) && \
	$(BIN)/nnlab run recipes/doodles-demo.toml --out $$run && \
	$(BIN)/nnlab data show $$run --n 36 >/dev/null && \
	echo && echo "report:      $$run/metrics.json  (again: $(BIN)/nnlab report $$run)" && \
	echo "plots:       $$run/plots/history.png, $$run/plots/confusion.png" && \
	echo "sample grid: $$run/plots/samples.png  (validation drawings with the model's guesses)"

# Two pytest-xdist workers, a test file each at a time (module fixtures stay in one process); the runs
# tests share are made once for both (tests/shared_runs.py). TEST_WORKERS=0: one process.
TEST_WORKERS ?= 2
test: $(STAMP)
	$(BIN)/python -m pytest -q $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadfile)

clean:
	rm -rf $(VENV) runs studies
