# The README's two commands are `make demo` and `make test`; each sets up what it needs first.
.PHONY: setup build demo up down test test-unit test-integration bench chaos chaos-ci clean

setup:
	@bash scripts/setup.sh

build:
	@npx tsc -p tsconfig.json

demo: setup
	node bin/keel.js demo

up: setup
	node bin/keel.js up --dir .keel --detach

down:
	node bin/keel.js down --dir .keel

test: setup
	npx vitest run

test-unit: setup
	npx vitest run test/unit

test-integration: setup
	npx vitest run test/integration

# Figures, never pass/fail on time: failover (with keel up's defaults, and lease-bound without a
# controller), router throughput and switching, read scaling, controller, the fencing guard (memory, CPU, time
# from a missed deadline to PostgreSQL stopped). One of them: make bench BENCH=router
# (bench/router.bench.ts); options are environment variables listed at the top of each file (BENCH_RUNS=5 ...).
# The switchover bench also runs Patroni beside Keel: scripts/setup-bench.sh installs Debian's patroni.
bench: setup
	@bash scripts/setup-bench.sh
	npx vitest run --config bench/vitest.config.ts $(if $(BENCH),bench/$(BENCH).bench.ts)

# Fault-injection suite over network-namespace hosts (root, iproute2, iptables):
# faults 1-10 with router and direct clients: 26 in synchronous mode, then 24 in asynchronous
# mode, every fault at least twice per mode (about 20 min); results in test/chaos/results/.
chaos: setup
	CHAOS_PROFILE=full npx vitest run --config test/chaos/vitest.config.ts

# The short subset for CI (about 2 min): faults 1, 2 and 4 in synchronous mode, then fault 9
# (the leader's agent stalled while PostgreSQL runs on) in asynchronous mode.
chaos-ci: setup
	CHAOS_PROFILE=ci npx vitest run --config test/chaos/vitest.config.ts

clean:
	rm -rf dist
