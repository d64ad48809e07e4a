# Lattice developer commands. Everything runs inside ./.venv, created on demand.
#   make up     install and bring the whole suite up (lattice up)
#   make test   install and run the test suite
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | sha256sum | cut -c1-12)
PROTOS := $(wildcard protos/lattice/v1/*.proto)
BUF    := node_modules/.bin/buf

.PHONY: install up test test-client-versions fuzz-long protos check-protos lint buf-lint buf-breaking \
	clean stubs-go stubs-ts stubs-java check-stubs-ts check-stubs-java java-stub-tools bench-litellm \
	bench-transformers-serve

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip uv
	# The CPU build of torch first (pip reads this machine's wheelhouse), so the
	# extras below never pull a CUDA build.
	$(BIN)/pip install --quiet torch==2.13.0
	# uv installs the ~150 other packages in about a third of pip's time
	# (bench/newcomer.py); pip stays the fallback where uv cannot reach an index.
	$(BIN)/uv pip install --quiet --python $(BIN)/python -e '.[dev]' || \
	  $(BIN)/pip install --quiet -e '.[dev]'
	touch $@

install: $(STAMP)

up: install
	$(BIN)/lattice up --starter-model starter-gpt

test: install
	$(BIN)/python -m pytest -q

# The client package (contract, SDK, CLI) on every other CPython this machine has:
# a client-only install (no extras) in a fresh venv per interpreter, and the
# tests that need nothing else. The full stack is tested on 3.11 by `make test`.
CLIENT_PYTHONS ?= 3.12 3.13
CLIENT_TESTS := tests/contract tests/sdk/test_public_api.py tests/cli/test_client_only.py tests/test_layers.py
test-client-versions:
	@for v in $(CLIENT_PYTHONS); do \
	  py=$$(ls $$HOME/.pyenv/versions/$$v*/bin/python$$v 2>/dev/null | tail -1); \
	  [ -n "$$py" ] || py=$$(command -v python$$v); \
	  if [ -z "$$py" ] || ! $$py --version >/dev/null 2>&1; then \
	    echo "python$$v: not installed here, not tested"; continue; fi; \
	  echo "== client package on $$($$py --version)"; \
	  rm -rf .venv-$$v && $$py -m venv .venv-$$v && \
	  .venv-$$v/bin/pip install --quiet . pytest pytest-asyncio pytest-timeout && \
	  .venv-$$v/bin/python -m pytest -q -p no:cacheprovider --noconftest $(CLIENT_TESTS) || exit 1; \
	done

# The fuzz harness of tests/reliability at length: FUZZ_EXAMPLES hostile requests per
# RPC and front (CI runs 150 per front, 300 per RPC); prints each test's count and the total.
FUZZ_EXAMPLES ?= 1000
fuzz-long: install
	LATTICE_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(BIN)/python -m pytest -p no:cacheprovider \
	  tests/reliability/test_fuzz.py

# Regenerate messages, gRPC stubs and .pyi type stubs into lattice/v1/.
protos: install
	$(BIN)/python -m grpc_tools.protoc -I protos \
	  --python_out=. --pyi_out=. --grpc_python_out=. $(PROTOS)

# Fail if the committed stubs differ from freshly generated ones.
check-protos: protos
	git diff --exit-code --stat -- lattice/v1 || \
	  (echo "generated stubs are stale: run 'make protos' and commit" >&2; exit 1)
	test -z "$$(git status --porcelain -- lattice/v1)" || \
	  (echo "untracked generated stubs: run 'make protos' and commit" >&2; exit 1)

$(BUF): package.json package-lock.json
	npm ci --silent --no-audit --no-fund
	touch $@

buf-lint: $(BUF)
	cd protos && ../$(BUF) lint

# Wire compatibility of the contract against a git ref (default: the previous commit).
BUF_AGAINST ?= HEAD~1
buf-breaking: $(BUF)
	$(BUF) breaking protos --against '.git#ref=$(BUF_AGAINST),subdir=protos'

# Stubs for other languages, one target per language (protos/buf.gen.<lang>.yaml),
# so a missing plugin fails only its own language. check-stubs-* also compile them.
stubs-go stubs-ts stubs-java: stubs-%: $(BUF)
	protos/check-stubs.sh $*
check-stubs-ts check-stubs-java: check-stubs-%: $(BUF)
	protos/check-stubs.sh $* --check

# What check-stubs-java needs, from Debian's archive (root): protoc, the grpc-java
# plugin and the jars javac compiles the stubs against (the JDK: default-jdk-headless).
JAVA_STUB_PACKAGES := protobuf-compiler protobuf-compiler-grpc-java-plugin libprotobuf-java libgrpc-java
java-stub-tools:
	dpkg -s $(JAVA_STUB_PACKAGES) >/dev/null 2>&1 || \
	  { apt-get update -qq && apt-get install -y --no-install-recommends $(JAVA_STUB_PACKAGES); }
	command -v javac >/dev/null || \
	  { apt-get update -qq && apt-get install -y --no-install-recommends default-jdk-headless; }

lint: install buf-lint
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# Lattice's gateway vs LiteLLM's proxy, same backend. LiteLLM goes into its own venv
# (.venv-litellm, git-ignored; litellm[proxy] would break the project venv's
# transformers), created by the script on first run.
bench-litellm: install
	$(BIN)/python bench/litellm_overhead.py

# Lattice vs `transformers serve` (plain and --continuous-batching), same model and load.
# transformers[serving] only adds fastapi and accelerate to the project venv.
bench-transformers-serve: install
	$(BIN)/pip install --quiet 'transformers[serving]>=5.25,<6'
	$(BIN)/python bench/transformers_serve.py

clean:
	rm -rf $(VENV) node_modules .lattice .pytest_cache protos/gen tools/stubs-ts/node_modules tools/stubs-ts/gen
