# hyper2kvm developer entry points.
#   make demo       install what is missing, build, convert sample disks and a real Debian guest
#                   (repaired and booted; the real guest needs root)
#   make test       the whole test suite (what CI runs): fmt, clippy, unit and integration tests
#   make test-fast  the same without the slow end-to-end tests
#   make bench      benchmark against qemu-img, openssl and virt-v2v; writes docs/performance.md
#                   (BENCH_QUICK=1 make bench: small images, a trial run only)
#   make bench-bounds  only the bounds part: hostile documents up to the size limit, time and RSS
#   make fuzz       a libFuzzer campaign of every parser (docs/fuzzing.md); FUZZ_TIME=seconds each
#   make dist       the release binary, its man page and shell completions (target/release/assets)
#   make install    install them under $(DESTDIR)$(PREFIX) (default /usr/local), building first
#                   only what is missing or older than the sources; make uninstall removes them

CARGO ?= cargo
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: all build release deps deps-core demo test test-fast bench bench-bounds fuzz lint fmt clean \
	dist install uninstall

PREFIX ?= /usr/local
DESTDIR ?=
BINDIR ?= $(PREFIX)/bin
DATADIR ?= $(PREFIX)/share
MANDIR ?= $(DATADIR)/man
INSTALL ?= install
# Cargo's profile for dist and install, and where cargo puts its output (CARGO_TARGET_DIR
# honoured); `PROFILE=dev` installs the debug build.
PROFILE ?= release
TARGET_DIR ?= $(or $(CARGO_TARGET_DIR),target)
OUT := $(TARGET_DIR)/$(if $(filter dev,$(PROFILE)),debug,$(PROFILE))
ASSETS := $(OUT)/assets
SOURCES := Cargo.toml Cargo.lock build.rs $(shell find src profiles -type f 2>/dev/null)
INSTALLED := $(BINDIR)/hyper2kvm $(MANDIR)/man1/hyper2kvm.1 \
	$(DATADIR)/bash-completion/completions/hyper2kvm $(DATADIR)/zsh/site-functions/_hyper2kvm \
	$(DATADIR)/fish/vendor_completions.d/hyper2kvm.fish

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

# The man page and completions come from src/cli.rs through hyper2kvm-assets, a binary of
# its own so that clap_mangen and clap_complete stay out of hyper2kvm. These are file targets:
# `sudo make install` after `make dist` runs no cargo as root. Cargo leaves a binary it did not
# need to rebuild as old as it was, hence the touch.
$(OUT)/hyper2kvm $(OUT)/hyper2kvm-assets &: $(SOURCES)
	$(CARGO) build --locked --profile $(PROFILE) --bin hyper2kvm --bin hyper2kvm-assets
	@touch $(OUT)/hyper2kvm $(OUT)/hyper2kvm-assets

$(ASSETS)/hyper2kvm.1: $(OUT)/hyper2kvm-assets
	$(OUT)/hyper2kvm-assets $(ASSETS)

dist: $(OUT)/hyper2kvm $(ASSETS)/hyper2kvm.1

install: dist
	$(INSTALL) -D -m 0755 $(OUT)/hyper2kvm $(DESTDIR)$(BINDIR)/hyper2kvm
	$(INSTALL) -D -m 0644 $(ASSETS)/hyper2kvm.1 $(DESTDIR)$(MANDIR)/man1/hyper2kvm.1
	$(INSTALL) -D -m 0644 $(ASSETS)/hyper2kvm.bash \
		$(DESTDIR)$(DATADIR)/bash-completion/completions/hyper2kvm
	$(INSTALL) -D -m 0644 $(ASSETS)/_hyper2kvm $(DESTDIR)$(DATADIR)/zsh/site-functions/_hyper2kvm
	$(INSTALL) -D -m 0644 $(ASSETS)/hyper2kvm.fish \
		$(DESTDIR)$(DATADIR)/fish/vendor_completions.d/hyper2kvm.fish

uninstall:
	rm -f $(addprefix $(DESTDIR),$(INSTALLED))

clean:
	$(CARGO) clean
	rm -rf demo-output
