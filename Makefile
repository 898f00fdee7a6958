# edgeport: `make demo` and `make test` work on a fresh clone; each sets up .venv by itself.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.edgeport-installed
DEMO   := examples/demo

.PHONY: setup demo test test-fast lint clean

setup: $(STAMP)

# Re-runs only when pyproject.toml changes (idempotent otherwise).
$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test]"
	@touch $(STAMP)

$(DEMO)/digits_cnn.keras $(DEMO)/digits_calib.npz: scripts/train_demo_model.py | $(STAMP)
	$(PY) scripts/train_demo_model.py --out-dir $(DEMO)

demo: setup $(DEMO)/digits_cnn.keras
	$(VENV)/bin/edgeport export $(DEMO)/digits_cnn.keras --target all \
		--calib $(DEMO)/digits_calib.npz:x --eval $(DEMO)/digits_calib.npz:x,y \
		--bench --bench-runs 20 -o $(DEMO)/out
	@echo "Reports: $(DEMO)/out/<target>/report.html (open in a browser), report.md, report.json"

# One pytest worker per core (at most 4: each imports TensorFlow, ~1 GB): the suite is CPU-bound
# conversions, 14 min on one of CI's 2 cores, 8.5 min on both.
test: setup
	$(PY) -m pytest -q -n auto --maxprocesses 4

lint: setup
	$(VENV)/bin/ruff check exporter tests scripts benchmarks
	$(VENV)/bin/ruff format --check exporter tests scripts benchmarks

clean:
	rm -rf $(DEMO)/out $(DEMO)/*.keras $(DEMO)/*.npz edgeport-out build dist *.egg-info
