# The two commands of the README: `make run` and `make test`. Both install
# what is missing first (scripts/setup.sh is idempotent and quiet when done).

CARGO ?= cargo
export PATH := $(HOME)/.cargo/bin:$(PATH)

.PHONY: run test build pgo hot-functions setup test-setup lint fmt clean fuzz fuzz-seeds soak

run: setup build
	./target/release/roomcast serve

build: setup
	$(CARGO) build --release --locked

# A profile-guided build, trained on this machine by relaying and mixing real
# RTMP streams: target/pgo/release/roomcast (scripts/pgo.sh says how).
pgo: test-setup
	bash scripts/pgo.sh

# The functions that relay a message, hottest first, which release builds
# lay out side by side (build.rs): counted by the instructions bench, then
# put in place as link/hot-functions.txt. Counted twice: on the release
# build (`make run`'s) and on the benches' build of the gateway, whose
# dependencies are built with other features (the dev-dependencies') and
# so have other symbols; the list names both. Needs valgrind.
hot-functions: test-setup
	@command -v valgrind >/dev/null || { echo "make hot-functions needs valgrind: apt-get install valgrind"; exit 1; }
	$(CARGO) build --release --locked
	mkdir -p target/hot-functions
	cp target/release/roomcast target/hot-functions/roomcast
	BENCH_GATEWAY_BIN=target/hot-functions/roomcast $(CARGO) bench --locked --bench relay_instructions > target/hot-functions/release.log
	$(CARGO) bench --locked --bench relay_instructions > target/hot-functions/bench.log
	grep -h -E "^(instructions a message|code run|hot functions)" target/hot-functions/release.log target/hot-functions/bench.log
	cat $$(sed -n 's|^work directory (dumps for callgrind_annotate): \(.*\)|\1/hot-functions.txt|p' target/hot-functions/release.log target/hot-functions/bench.log) | awk '!seen[$$0]++' > link/hot-functions.txt
	wc -l link/hot-functions.txt

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

# Every fuzz target for FUZZ_SECS seconds each (nightly and cargo-fuzz are
# installed if missing). The corpus grows in fuzz/corpus/<target> from the
# committed seeds; a crash lands in fuzz/artifacts/<target>/ and belongs,
# once fixed, in fuzz/regressions/<target>/ (replayed by `make test`).
FUZZ_SECS ?= 60
FUZZ_TARGETS ?= $(notdir $(basename $(wildcard fuzz/fuzz_targets/*.rs)))
fuzz: setup
	@bash scripts/setup.sh --fuzz
	cd fuzz && cargo +nightly fuzz build -O
	@mkdir -p fuzz/logs; failed=""; for t in $(FUZZ_TARGETS); do \
		mkdir -p fuzz/corpus/$$t; \
		if (cd fuzz && cargo +nightly fuzz run -O $$t corpus/$$t seeds/$$t -- \
			-max_total_time=$(FUZZ_SECS) -timeout=20 -rss_limit_mb=4096 \
			-print_final_stats=1 > logs/$$t.log 2>&1); then r=ok; else r=CRASHED; failed="$$failed $$t"; fi; \
		echo "$$t: $$r, $$(grep -m1 number_of_executed_units fuzz/logs/$$t.log | tr -s ' ' | cut -d' ' -f2) executions in $(FUZZ_SECS) s (fuzz/logs/$$t.log)"; \
	done; \
	if [ -n "$$failed" ]; then echo "crashed:$$failed (inputs in fuzz/artifacts/)"; exit 1; fi

# Rewrites fuzz/seeds/ from real captures (ffmpeg, aiortc, the SDK captures).
fuzz-seeds: test-setup
	cargo build --locked
	.venv/bin/python fuzz/make_seeds.py

# Two mixed rooms, a bypass relay and HLS clients for SOAK_MINUTES (30),
# RSS, CPU and frame rates every minute; fails on growth or a stalled task.
soak: build
	python3 scripts/soak.py
