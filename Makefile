# The two commands of the README. Both create .venv/ first if it is missing or stale.
.PHONY: demo test lint bench venv

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
