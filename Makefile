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

# 10,000 connections need more than 10,000 file descriptors in the generator and in
# the server: raise the limit where allowed (root may raise the hard limit too);
# python -m bench says so and stops if it is still too low.
bench:
	@scripts/bootstrap.sh --bench
	ulimit -n 65536 2>/dev/null || ulimit -n "$$(ulimit -Hn)"; .venv/bin/python -m bench $(ARGS)

lint:
	@scripts/bootstrap.sh --test
	.venv/bin/ruff check src tests bench
	.venv/bin/mypy
