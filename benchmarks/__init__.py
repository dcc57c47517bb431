"""
Load, soak and performance scripts; run them from the repository root, e.g.
C{python benchmarks/soak.py --help}.
"""
