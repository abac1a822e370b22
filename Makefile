# The two commands of the README. Both create .venv/ first if it is missing or stale.
.PHONY: demo test lint bench venv results

venv:
	@bash scripts/setup-venv.sh

demo: venv
	.venv/bin/ppd demo --out out/demo

test: venv
	.venv/bin/ruff check src tests
	.venv/bin/python -m pytest -q

lint: venv
	.venv/bin/ruff check src tests

bench: venv
	.venv/bin/ppd bench sam

# docs/RESULTS.md: one-shot eval split, 5 seeded references, seeded target subsets (see the doc).
RESULTS_LIMITS = kvasir:40 ph2:20 ecssd:20
results: venv
	for spec in $(RESULTS_LIMITS); do \
	  .venv/bin/ppd eval --dataset $${spec%%:*} --limit $${spec##*:} --out docs/results/$${spec%%:*} || exit 1; \
	done
	.venv/bin/python -m ppd.evaluate.report docs/results --out docs/RESULTS.md
