GO       ?= go
# The fuzz run's budget: by default a count of executions a target (about
# 10 s of each on a 2-core machine), not a duration: Go's fuzzing can fail a
# duration-bounded run with "context deadline exceeded" and no failing input
# when a loaded machine starves its workers at the deadline
# (go.dev/issue/75804). FUZZTIME=60s (or 1000000x) sets one budget for all.
FUZZTIME ?=
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
	$(GO) test -run='^$$' -fuzz='^FuzzParseJSON$$' -fuzztime=$(or $(FUZZTIME),250000x) ./validate
	$(GO) test -run='^$$' -fuzz='^FuzzParseCBOR$$' -fuzztime=$(or $(FUZZTIME),400000x) ./validate
	$(GO) test -run='^$$' -fuzz='^FuzzDecodeSignature$$' -fuzztime=$(or $(FUZZTIME),400000x) ./validate
	$(GO) test -run='^$$' -fuzz='^FuzzParseDIDKey$$' -fuzztime=$(or $(FUZZTIME),300000x) ./validate
	$(GO) test -run='^$$' -fuzz='^FuzzParseCompact$$' -fuzztime=$(or $(FUZZTIME),350000x) ./validate
	$(GO) test -run='^$$' -fuzz='^FuzzExportLine$$' -fuzztime=$(or $(FUZZTIME),300000x) .
	$(GO) test -run='^$$' -fuzz='^FuzzLeaf$$' -fuzztime=$(or $(FUZZTIME),200000x) .
	$(GO) test -run='^$$' -fuzz='^FuzzParsePolicy$$' -fuzztime=$(or $(FUZZTIME),60000x) ./tlog
	$(GO) test -run='^$$' -fuzz='^FuzzParseDIDList$$' -fuzztime=$(or $(FUZZTIME),15000x) ./api
	$(GO) test -run='^$$' -fuzz='^FuzzParseIndex$$' -fuzztime=$(or $(FUZZTIME),20000x) ./bundle

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
