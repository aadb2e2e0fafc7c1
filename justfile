# Reelway developer commands. `scripts/setup.sh` installs what these need (idempotent).
set shell := ["bash", "-euo", "pipefail", "-c"]

buf := `scripts/setup.sh buf-path`
consul := `scripts/setup.sh consul-path`

# List the recipes.
default:
    @just --list

# Install ffmpeg, just, buf and the Consul agent when missing.
setup:
    scripts/setup.sh

# Print buf/validate/validate.proto from the protovalidate Go module for buf to import.
proto-deps:
    @test -f .buf-deps/buf/validate/validate.proto || go run ./tools/protodeps -out .buf-deps

# Regenerate gen/ from proto/.
gen: proto-deps
    {{buf}} format -w proto
    {{buf}} generate

# Fail when gen/ is not what the schemas generate.
check-gen: gen
    test -z "$(git status --porcelain -- gen proto)" || (git status --porcelain -- gen proto; echo 'gen/ is stale: run just gen' >&2; exit 1)

# Lint schemas and Go code.
lint: proto-deps
    {{buf}} lint
    {{buf}} format -d --exit-code proto
    test -z "$(gofmt -l $(git ls-files '*.go' | grep -v '^gen/'))" || (gofmt -l $(git ls-files '*.go' | grep -v '^gen/'); exit 1)
    go vet ./...

# Run the whole platform in one process with hot reload on code change.
dev:
    go tool -modfile=tools/air.mod air -c .air.toml

# Run the whole platform in one process, without hot reload.
run:
    go run . dev

# Run the full test suite: unit, in-process, and integration tests with real Consul, NATS and ffmpeg.
test: proto-deps
    REELWAY_CONSUL_BIN={{consul}} REELWAY_BUF_BIN={{buf}} go test -race -count=1 -timeout 45m ./...

# Fast tests only (no integration).
test-short:
    go test -race -short -count=1 ./...

# Build the binary into bin/.
build:
    go build -o bin/reelway .
