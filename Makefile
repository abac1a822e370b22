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

# docs/RESULTS.md: the shipped configuration on the eval split (issue #20, item 5): 5 seeded references,
# seeded target subsets (all 50 PH2 images less the 5 references), every method with 10 votes where it
# votes (reference flips, target flips, then a second k-means seed: session 16); the greedy oracle (~7 s per target and reference) on a 20-target subset of its own.
RESULTS_LIMITS = kvasir:100 ph2:45 ecssd:100
RESULTS_METHODS = fm-kmeans,fm-ppd,fm-gbmseg,persam,fm-random
RESULTS_VOTES = 10
ORACLE_LIMIT = 20
results: venv
	for spec in $(RESULTS_LIMITS); do d=$${spec%%:*}; \
	  .venv/bin/ppd eval --dataset $$d --limit $${spec##*:} --methods $(RESULTS_METHODS) \
	    --votes $(RESULTS_VOTES) --out docs/results/$$d || exit 1; \
	  .venv/bin/ppd eval --dataset $$d --limit $(ORACLE_LIMIT) --methods fm-kmeans,fm-ppd,fm-greedy-oracle \
	    --out docs/results/oracle/$$d || exit 1; \
	done
	.venv/bin/python -m ppd.evaluate.report docs/results --out docs/RESULTS.md
