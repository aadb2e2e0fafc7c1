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

# Run the benchmarks and write their sections of BENCHMARKS.md.
bench: bench-media bench-events bench-gateway bench-upload

# Media benchmark: segment serving (nginx vs streaming vs gateway, wrk) and transcode wall time vs raw ffmpeg.
bench-media:
    command -v wrk >/dev/null && command -v nginx >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk nginx)
    REELWAY_BENCH_FILE={{justfile_directory()}}/BENCHMARKS.md go test ./e2e -run '^TestBenchMedia$' -count=1 -timeout 60m -v

# Benchmark the gateway against direct calls and Caddy on loopback (results go in BENCHMARKS.md).
bench-gateway:
    command -v caddy >/dev/null || (apt-get update && apt-get install -y caddy)
    mkdir -p bin
    go build -o bin/reelway .
    go build -o bin/testbackend ./gateway/internal/testbackend/cmd/testbackend
    REELWAY_BENCH_FILE={{justfile_directory()}}/BENCHMARKS.md REELWAY_CONSUL_BIN={{consul}} go run ./bench -reelway bin/reelway -testbackend bin/testbackend

# Upload benchmark: a 1 GiB file through the gateway (POST and tus) against dd to the same disk, and the upload process's peak memory.
bench-upload:
    REELWAY_BENCH_FILE={{justfile_directory()}}/BENCHMARKS.md REELWAY_CONSUL_BIN={{consul}} go test ./e2e -run '^TestBenchUpload$' -count=1 -timeout 20m -v

# Event bus benchmark: the bus against raw nats.go JetStream, throughput and publish→handler latency.
bench-events:
    REELWAY_BENCH_FILE={{justfile_directory()}}/BENCHMARKS.md go test ./svc/events -run '^$' -bench BenchmarkBus -benchtime 3s -count 1 -timeout 10m
