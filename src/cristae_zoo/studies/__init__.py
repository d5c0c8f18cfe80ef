"""Studies of trust (issue 5): stability across trainings, limits of use, ablation, hallucination checks.

Each study is a function that writes a folder of CSV tables, a `summary.md` and PNG figures, and is exposed as
`cristae-zoo study NAME` (see `cristae_zoo.cli_studies`).
"""
