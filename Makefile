GO       ?= go
FUZZTIME ?= 10s
VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)

.PHONY: build test check unit fuzz bench attack interop clean

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "-X main.version=$(VERSION)" -o bin/plc ./cmd/plc

# The whole suite: static checks, the race-enabled tests, a short fuzz run.
test: check unit fuzz

check:
	@unformatted=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$unformatted" ]; then echo "gofmt needed on:"; echo "$$unformatted"; exit 1; fi
	$(GO) vet ./...

# Under a throwaway PostgreSQL cluster (scripts/with-postgres.sh) when one can
# be started; PLC_REQUIRE_POSTGRES=1 makes the PostgreSQL tests mandatory.
unit:
	bash scripts/with-postgres.sh $(GO) test -race -count=1 ./...

fuzz:
	$(GO) test -run='^$$' -fuzz='^FuzzParseJSON$$' -fuzztime=$(FUZZTIME) ./validate
	$(GO) test -run='^$$' -fuzz='^FuzzParseCBOR$$' -fuzztime=$(FUZZTIME) ./validate
	$(GO) test -run='^$$' -fuzz='^FuzzDecodeSignature$$' -fuzztime=$(FUZZTIME) ./validate
	$(GO) test -run='^$$' -fuzz='^FuzzParseDIDKey$$' -fuzztime=$(FUZZTIME) ./validate
	$(GO) test -run='^$$' -fuzz='^FuzzParseCompact$$' -fuzztime=$(FUZZTIME) ./validate
	$(GO) test -run='^$$' -fuzz='^FuzzExportLine$$' -fuzztime=$(FUZZTIME) .
	$(GO) test -run='^$$' -fuzz='^FuzzLeaf$$' -fuzztime=$(FUZZTIME) .
	$(GO) test -run='^$$' -fuzz='^FuzzParsePolicy$$' -fuzztime=$(FUZZTIME) ./tlog
	$(GO) test -run='^$$' -fuzz='^FuzzParseDIDList$$' -fuzztime=$(FUZZTIME) ./api
	$(GO) test -run='^$$' -fuzz='^FuzzParseIndex$$' -fuzztime=$(FUZZTIME) ./bundle

bench:
	$(GO) test -run='^$$' -bench=. -benchmem -count=6 ./validate

# The third-party verifiers alone (README, "Interoperability"); make test
# runs them too, as part of ./...
interop:
	$(GO) test -count=1 -v ./scripts/interop

# The attack suite against the real binary (README, "The attack suite").
attack:
	bash scripts/with-postgres.sh $(GO) run ./scripts/attack $(ATTACKFLAGS)

clean:
	rm -rf bin
