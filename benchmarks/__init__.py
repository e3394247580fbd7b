"""Performance benchmarks (issue 7): one command each, ``python -m benchmarks.<name>``.

Every benchmark measures its reference in the same run, on the same data, and prints the ratio;
absolute times on a shared machine are context only. Figures go to ``benchmarks/results/<name>.json``
with their provenance (command, commit, hardware, versions); ``benchmarks/README.md`` lists them.
"""
