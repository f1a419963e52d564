"""Speed and real-data figures (`make bench`). Not part of `make test`: tests/test_benchmarks_smoke.py
only runs some scripts on tiny inputs so they keep working."""
