# One entry point for every task. `make demo` and `make test` are all a newcomer needs.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test test-fast lint format typecheck protos check-protos clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "scriptpool needs Python >= 3.11"'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[all,dev]'
	touch $(STAMP)

install: $(STAMP)

## Start the embedded stack, run examples/quickstart.lua, shut everything down.
demo: $(STAMP)
	$(BIN)/scriptpool demo examples/quickstart.lua

## The whole test suite against real redis-server, gRPC and worker processes.
test: $(STAMP)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

typecheck: $(STAMP)
	$(BIN)/mypy proto/scriptpool tests

## Regenerate the committed gRPC/protobuf code from proto/scriptpool/v1/*.proto.
protos: $(STAMP)
	$(BIN)/python proto/generate.py

## Fail when the committed generated code differs from what the .proto files give.
check-protos: $(STAMP)
	$(BIN)/python proto/generate.py --check

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
