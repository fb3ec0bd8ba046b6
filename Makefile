# Two commands for a fresh Debian/Ubuntu machine with Python >= 3.10:
#   make demo   set up, then compare logreg, mlp, cnn and alexnet on the built-in digits
#   make test   set up, then run the whole test suite
PYTHON ?= python3
VENV ?= .venv
# The CPU build of torch is installed first, so the package's torch>=2.4 adds nothing. On a GPU machine:
#   make test TORCH_SPEC='torch'   (or any CUDA build you already use)
TORCH_SPEC ?= torch==2.13.0
# Debian packages with the offline data sets and tools the tasks and tests use.
# chromium and chromium-driver: the web page's browser test (Selenium drives Debian's browser).
SYSTEM_PACKAGES ?= dataset-fashion-mnist fortunes espeak-ng chromium chromium-driver

.PHONY: setup demo test clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml Makefile
	@missing=""; for p in $(SYSTEM_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	  else echo "note: missing Debian packages:$$missing (sudo apt-get install$$missing); tests that need them are skipped"; fi; \
	fi
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -c "import torch" 2>/dev/null || $(VENV)/bin/pip install -q "$(TORCH_SPEC)"
	$(VENV)/bin/pip install -q -e ".[test,ray]"
	touch $@

demo: setup
	rm -rf runs/demo-digits
	$(VENV)/bin/deepskeptic compare image --data digits --models logreg,mlp,cnn,alexnet --seeds 3 --epochs 20 \
	  --out runs/demo-digits --no-progress
	@echo "open runs/demo-digits/report.html in a browser"

# Two pytest workers (pytest-xdist), a test file each at a time: most tests run on one thread, so
# two of them keep both cores of a small machine busy. TEST_JOBS=1 runs them one after another.
TEST_JOBS ?= 2

test: setup
	$(VENV)/bin/python -m pytest -q -n $(TEST_JOBS) --dist loadfile

clean:
	rm -rf $(VENV) runs build src/*.egg-info
