# Nimbus. `make run` starts everything on a laptop; `make test` runs every
# test against real services (MariaDB, the Temporal dev server), starting
# them first.
GO      ?= go
BIN     ?= bin/nimbus
ARGS    ?=
TESTFLAGS ?= -count=1 -timeout 80m

.PHONY: run build test services services-stop lint clean

# The quickstart: SQLite inventory, a Temporal dev server with its UI, API and
# worker in one process, admin keys printed. Ctrl-C stops it all.
run: build
	exec ./$(BIN) dev $(ARGS)

build:
	$(GO) build -o $(BIN) ./cmd/nimbus

# Every test. Installs (as root on Debian) and starts what the tests need.
test: services
	. ./.test-services/env && $(GO) test $(TESTFLAGS) ./...

services:
	./scripts/services.sh

services-stop:
	./scripts/services.sh stop

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

clean:
	rm -rf bin .nimbus
