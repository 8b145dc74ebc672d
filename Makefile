# GNU make. Everything runs in the virtual environment .venv, created on first use.
# Each requirements file is installed again only when it changed (stamp files in .venv).

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
CHROMIUM := /usr/bin/chromium
PYTEST_ARGS ?=
# requirements.txt names PyTorch's CPU index; where it cannot be reached (this machine: no DNS for it) pip
# skips it, but by default only after 5 retries with backoff for each of the ~40 packages (6 min for a
# dry run here). One retry, no backoff, and a 10 s socket timeout keep an unreachable index cheap.
PIP_FLAGS ?= --retries 1 --timeout 10
PIP_INSTALL := $(PY) -m pip install $(PIP_FLAGS)

.PHONY: run test bench screenshots load-test cloud-check chromium clean

$(PY):
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed-req: requirements.txt | $(PY)
	$(PIP_INSTALL) -r requirements.txt
	touch $@

# The tests also cover the optional Ray backend of `grid` (requirements-ray.txt) and check the TRL
# export against TRL itself (requirements-trl.txt), so they install both.
$(VENV)/.installed-test: requirements-test.txt requirements.txt requirements-ray.txt requirements-trl.txt | $(PY)
	$(PIP_INSTALL) -r requirements-test.txt -r requirements-ray.txt -r requirements-trl.txt
	touch $@

## run: start the app on http://localhost:8501
run: $(VENV)/.installed-req
	$(VENV)/bin/streamlit run app.py --server.port 8501 --server.address localhost \
		--server.headless true --browser.gatherUsageStats false

## chromium: install Debian's chromium for the browser tests when it is missing and we are root
chromium:
	@if [ -x $(CHROMIUM) ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "Installing Debian chromium (browser tests need $(CHROMIUM))"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; \
	else \
		echo "WARNING: $(CHROMIUM) is missing, so the browser tests will fail." \
			"Install it with: sudo apt-get install chromium"; \
	fi

## test: the whole suite (core, app, CLI and real-browser tests); see pyproject.toml
test: $(VENV)/.installed-test chromium
	$(PY) -m pytest $(PYTEST_ARGS)

## bench: timing figures of the core engine
bench: $(VENV)/.installed-req
	$(PY) -m grpo_core bench

## screenshots: regenerate the README images in docs/img/
screenshots: $(VENV)/.installed-test chromium
	$(PY) scripts/screenshots.py

## load-test: 20 concurrent browser sessions against one local app process (figures; not in make test)
load-test: $(VENV)/.installed-test chromium
	$(PY) scripts/load_test.py --sessions 20

## cloud-check: install requirements.txt into a fresh venv as a host would; torch build, CUDA packages, size, memory
cloud-check: chromium
	$(PYTHON) scripts/cloud_install_check.py --pip-flags="$(PIP_FLAGS)"

clean:
	rm -rf $(VENV) test-output
