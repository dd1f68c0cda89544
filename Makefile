# ostree-upload build, test and install.
#   make demo       end to end on embedded defaults: a daemon, a repo, pushes, a pull
#   make            build bin/ostree-upload
#   make test       install missing Debian packages, go vet, go test (race detector on, files on a tmpfs)
#   make bench      Go benchmarks, then push vs ostree pull and push over ssh vs ostree-push (full fixture), the tiny-files push and pull (200,000 files) and the million-object push
#   make bench-smoke   push vs ostree pull on the small fixture, one run per scenario (a few minutes)
#   make bench-go   Go benchmarks of the store package
#   make bench-deps install the Debian packages the bench needs (iproute2; Python and its OSTree bindings for ostree-push)
#   make install    install the binary under $(DESTDIR)$(PREFIX)/bin, the systemd unit and the docs

PREFIX  ?= /usr/local
DESTDIR ?=
BINDIR  ?= $(CURDIR)/bin
BINNAME ?= ostree-upload

export PATH := /usr/local/go/bin:$(PATH)
GO      ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT  ?= $(shell git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
LDFLAGS := -s -w -X main.version=$(VERSION) -X main.commit=$(COMMIT)

# Debian packages the build and the tests need.
DEB_PACKAGES := gcc pkg-config libostree-dev ostree curl gnupg flatpak nginx-light prometheus openssh-server openssh-client
# Debian packages the push vs pull bench needs as well; the Python ones run
# ostree-push in the ssh scenarios.
BENCH_DEB_PACKAGES := iproute2 python3-gi gir1.2-ostree-1.0 python3-yaml

# The bench's fixture cache, run directories and results; extra flags for it.
BENCH_WORK  ?= /var/tmp/ostree-upload-bench
BENCH_FLAGS ?=
# A checkout of ostree-push v1.2.0, which the ssh scenarios compare with;
# without it they skip it and say so.
BENCH_OSTREE_PUSH ?=
BENCH_OSTREE_PUSH_FLAG = $(if $(BENCH_OSTREE_PUSH),--ostree-push $(BENCH_OSTREE_PUSH))
BENCH_BIN   := $(BINDIR)/ostree-upload-bench

.PHONY: all build deps bench-deps demo test bench bench-go bench-smoke fuzz install install-data uninstall clean

all: build

build: $(BINDIR)/$(BINNAME)

$(BINDIR)/$(BINNAME): FORCE
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $@ ./cmd/ostree-upload

FORCE:

# apt_install installs whichever of the Debian packages $(1) are missing,
# without prompting (through sudo unless root).
define apt_install
	@missing=$$(for p in $(1); do dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "Installing Debian packages:" $$missing; \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
		$$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi
endef

deps:
	$(call apt_install,$(DEB_PACKAGES))

bench-deps:
	$(call apt_install,$(BENCH_DEB_PACKAGES))

demo: deps build
	bash docs/examples/demo.sh $(BINDIR)/$(BINNAME)

# The tests' files go to a tmpfs when one has room (TEST_TMPFS, 4 GiB free at
# least): the same code runs, and fsync costs nothing there. Elsewhere they go
# to the usual TMPDIR.
TEST_TMPFS ?= /dev/shm

test: deps
	$(GO) vet ./...
	@tmp=; \
	if [ -d "$(TEST_TMPFS)" ] && [ "$$(df -Pk "$(TEST_TMPFS)" | awk 'NR==2 {print $$4}')" -ge 4194304 ]; then \
		tmp=$$(mktemp -d "$(TEST_TMPFS)/ou-test.XXXXXX") && export TMPDIR=$$tmp && echo "test files in $$tmp"; \
	fi; \
	$(GO) test -race -count=1 -timeout 15m -parallel 4 ./...; rc=$$?; \
	[ -z "$$tmp" ] || rm -rf "$$tmp"; exit $$rc

bench-go: deps
	$(GO) test -run '^$$' -bench . -benchmem -timeout 30m ./store/

$(BENCH_BIN): FORCE
	$(GO) build -o $@ ./cmd/ostree-upload-bench

# Needs root (network namespaces). See docs/benchmarks.md.
bench: deps bench-deps build bench-go $(BENCH_BIN)
	$(BENCH_BIN) --fixture full --million --tiny-files 200000 --tiny-runs 3 --bin $(BINDIR)/$(BINNAME) --work $(BENCH_WORK) --json $(BENCH_WORK)/results.json $(BENCH_OSTREE_PUSH_FLAG) $(BENCH_FLAGS)

bench-smoke: deps bench-deps build $(BENCH_BIN)
	$(BENCH_BIN) --fixture small --runs 1 --bin $(BINDIR)/$(BINNAME) --work $(BENCH_WORK) --json $(BENCH_WORK)/smoke.json $(BENCH_OSTREE_PUSH_FLAG) $(BENCH_FLAGS)

# Longer fuzzing runs than the seed-corpus pass of make test.
FUZZTIME ?= 2m
fuzz:
	$(GO) test -run '^$$' -fuzz FuzzDecode -fuzztime $(FUZZTIME) ./store/internal/gvariant/
	$(GO) test -run '^$$' -fuzz FuzzVerify -fuzztime $(FUZZTIME) ./store/object/
	$(GO) test -run '^$$' -fuzz FuzzParseObjectName -fuzztime $(FUZZTIME) ./store/object/
	$(GO) test -run '^$$' -fuzz '^FuzzPackPath$$' -fuzztime $(FUZZTIME) ./repository/
	$(GO) test -run '^$$' -fuzz '^FuzzPackTar$$' -fuzztime $(FUZZTIME) ./repository/
	$(GO) test -run '^$$' -fuzz '^FuzzUploadPath$$' -fuzztime $(FUZZTIME) ./daemon/httpapi/
	$(GO) test -run '^$$' -fuzz '^FuzzDecodeJSON$$' -fuzztime $(FUZZTIME) ./daemon/httpapi/

SYSTEMDUNITDIR ?= $(PREFIX)/lib/systemd/system
# The README and docs/ as in the source tree, so that their links hold; the
# unit's Documentation= points here.
DOCDIR ?= $(PREFIX)/share/doc/ostree-upload

install: $(BINDIR)/$(BINNAME) install-data
	install -Dm755 $< $(DESTDIR)$(PREFIX)/bin/$(BINNAME)

# The systemd unit (its paths under $(PREFIX)) and the documentation.
install-data:
	@mkdir -p $(BINDIR)
	sed -e 's|/usr/local/bin/|$(PREFIX)/bin/|' -e 's|/usr/local/share/doc/ostree-upload/|$(DOCDIR)/|' \
		docs/examples/ostree-upload.service > $(BINDIR)/ostree-upload.service
	install -Dm644 $(BINDIR)/ostree-upload.service $(DESTDIR)$(SYSTEMDUNITDIR)/ostree-upload.service
	install -Dm644 -t $(DESTDIR)$(DOCDIR) README.md LICENSE
	install -Dm644 -t $(DESTDIR)$(DOCDIR)/docs docs/*.md
	install -Dm644 -t $(DESTDIR)$(DOCDIR)/docs/examples docs/examples/*

uninstall:
	rm -f $(DESTDIR)$(PREFIX)/bin/$(BINNAME) $(DESTDIR)$(SYSTEMDUNITDIR)/ostree-upload.service
	rm -rf $(DESTDIR)$(DOCDIR)

clean:
	rm -rf $(BINDIR)
