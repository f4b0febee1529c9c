"""``python -m bench``: the propagation comparison (see ``bench/propagation.py``)."""

from bench.propagation import main

main()
