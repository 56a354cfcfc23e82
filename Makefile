# Two set-up commands (see README): `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DEMO_DIR ?= demo/photos

.PHONY: venv demo test bench clean

$(BIN)/pixdedup: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(BIN)/pixdedup

venv: $(BIN)/pixdedup

demo: venv
	rm -rf demo
	$(BIN)/python -m pixdedup.samples demo/photos
	$(BIN)/pixdedup scan $(DEMO_DIR)
	@echo
	@echo "Results: $(DEMO_DIR)_deduplicated/  (best/, duplicates/, image_report.csv, report.json)"

test: venv
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/mypy
	$(BIN)/pytest -q -p no:cacheprovider

# make bench PHOTOS=folder-of-real-photos
bench: venv
	@test -n "$(PHOTOS)" || { echo "usage: make bench PHOTOS=folder-of-photos"; exit 2; }
	$(BIN)/python benchmarks/accuracy.py --photos $(PHOTOS)

clean:
	rm -rf $(VENV) demo bench-data
