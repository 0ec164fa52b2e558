"""Benchmarks run by ``make bench``: each module's ``main()`` prints its figures next to a
baseline measured in the same run."""
