# The two commands of the quickstart:
#   make serve   install what is needed and run the server (SQLite, in-process bus)
#   make test    install what is needed and run the whole test suite
# and, beyond the quickstart:
#   make bench   the performance benchmarks (docs/performance.md)
#   make lint    ruff and mypy --strict
.PHONY: serve test bench lint

serve:
	@scripts/bootstrap.sh
	.venv/bin/tandem serve $(ARGS)

test:
	@scripts/test.sh $(ARGS)

bench:
	@scripts/bootstrap.sh --bench
	.venv/bin/python -m bench $(ARGS)

lint:
	@scripts/bootstrap.sh --test
	.venv/bin/ruff check src tests bench
	.venv/bin/mypy
