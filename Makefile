# The README's two commands are `make demo` and `make test`; each sets up what it needs first.
.PHONY: setup build demo up down test test-unit test-integration bench chaos clean

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

bench: setup
	node bench/failover.mjs

clean:
	rm -rf dist
