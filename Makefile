# The two commands of the README: `make run` and `make test`. Both install
# what is missing first (scripts/setup.sh is idempotent and quiet when done).

CARGO ?= cargo
export PATH := $(HOME)/.cargo/bin:$(PATH)

.PHONY: run test build setup test-setup lint fmt clean

run: setup build
	./target/release/roomcast serve

build: setup
	$(CARGO) build --release --locked

test: test-setup
	$(CARGO) test --locked --lib --bins --tests

lint: setup
	$(CARGO) fmt --check
	$(CARGO) clippy --locked --all-targets -- -D warnings

fmt:
	$(CARGO) fmt

setup:
	@bash scripts/setup.sh

test-setup:
	@bash scripts/setup.sh --test

clean:
	$(CARGO) clean
	rm -rf .venv
