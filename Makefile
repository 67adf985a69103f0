# Two commands matter (README): `make demo` and `make test`. Each sets up what it needs.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
VENV42 := .venv-bpy42
# torch and torchvision first, pinned to the pair that works together (open_clip needs torchvision).
TORCH := torch==2.14.1 torchvision==0.29.1
REAL_BLENDER ?= $(wildcard ../shared/tools/real-blender)

.PHONY: demo test test-real-blender test-batch lint backend bpy42 real-blender bench zip clean

$(VENV)/.ready: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade "pip>=25.1"
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q --group test
	touch $@

$(VENV42)/.ready: pyproject.toml
	$(PYTHON) -m venv $(VENV42)
	$(VENV42)/bin/pip install -q --upgrade "pip>=25.1"
	$(VENV42)/bin/pip install -q --group bpy42
	touch $@

backend: $(VENV)/.ready  ## the backend Python the add-on uses by default (.venv/bin/python)
bpy42: $(VENV42)/.ready

real-blender:
ifneq ($(REAL_BLENDER),)
	$(REAL_BLENDER) setup
endif

demo: $(VENV)/.ready
	$(BIN)/python bin/splatsketch --demo --output out/demo.blend --preview out/demo.png --json out/demo.json

lint: $(VENV)/.ready
	$(BIN)/ruff check .

test: $(VENV)/.ready $(VENV42)/.ready real-blender lint
	# the backend and add-on suites on 2 workers (independent tests; minutes saved on 2 cores)
	$(BIN)/python -m pytest tests/backend -q -n 2
	$(BIN)/python -m pytest tests/addon -q -n 2 --ignore=tests/addon/test_real_blender.py \
		--ignore=tests/addon/test_setup_backend_e2e.py
	# the modules that drive a whole Blender binary or a backend set-up, and the batch suite (a 2-CPU
	# Ray instance), each run one process at a time, mostly waiting on disk and children: side by side
	$(MAKE) --no-print-directory -j2 --output-sync=target test-real-blender test-batch
	# the real-Blender modules run a Blender binary, whichever wheel hosts pytest: once is enough
	$(VENV42)/bin/python -m pytest tests/addon -q -n 2 --ignore=tests/addon/test_real_blender.py \
		--ignore=tests/addon/test_setup_backend_e2e.py

test-real-blender: $(VENV)/.ready real-blender
	$(BIN)/python -m pytest tests/addon/test_real_blender.py tests/addon/test_setup_backend_e2e.py -q

test-batch: $(VENV)/.ready
	$(BIN)/python -m pytest tests/batch -q

zip: $(VENV)/.ready  ## the installable extension (dist/splatsketch-<version>.zip), built by Blender's own tool
	mkdir -p dist
	$(BIN)/python $(VENV)/lib/python3.11/site-packages/bpy/*/scripts/addons_core/bl_pkg/cli/blender_ext.py \
		build --source-dir . --output-dir dist

bench: $(VENV)/.ready
	$(BIN)/python bench/backend_speed.py

clean:
	rm -rf $(VENV) $(VENV42) dist out
