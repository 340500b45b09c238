# hyper2kvm developer entry points.
#   make demo       install what is missing, build, convert sample disks and a real Debian guest
#                   (repaired and booted; the real guest needs root)
#   make test       the whole test suite (what CI runs): fmt, clippy, unit and integration tests
#   make test-fast  the same without the slow end-to-end tests
#   make bench      benchmark against qemu-img, openssl and virt-v2v; writes docs/performance.md
#                   (BENCH_QUICK=1 make bench: small images, a trial run only)
#   make bench-bounds  only the bounds part: hostile documents up to the size limit, time and RSS
#   make fuzz       a libFuzzer campaign of every parser (docs/fuzzing.md); FUZZ_TIME=seconds each

CARGO ?= cargo
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: all build release deps deps-core demo test test-fast bench bench-bounds fuzz lint fmt clean

all: build

build:
	$(CARGO) build

release:
	$(CARGO) build --release

deps-core:
	$(SUDO) scripts/install-deps.sh core

deps:
	$(SUDO) scripts/install-deps.sh full

demo: deps release
	scripts/demo.sh

lint:
	$(CARGO) fmt --all --check
	$(CARGO) clippy --all-targets --locked -- -D warnings

test: lint
	scripts/run-tests.sh

test-fast: lint
	HYPER2KVM_SKIP_SLOW=1 scripts/run-tests.sh

bench:
	scripts/bench.sh

bench-bounds:
	$(CARGO) build --release --locked
	python3 scripts/bench_bounds.py

fuzz:
	scripts/fuzz.sh

fmt:
	$(CARGO) fmt --all

clean:
	$(CARGO) clean
	rm -rf demo-output
