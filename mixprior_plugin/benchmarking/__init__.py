"""The method benchmark: one teacher, students in several compression settings, every method, paired seeds.

Modules: :mod:`.profiles` (profiles, methods, option files, the exact options of a run), :mod:`.data` (training
pairs in memory, the validation split), :mod:`.training` (one run, its learning curve and weights; the teacher),
:mod:`.selection` (the run plan, the weight choice, variants, worker claims), :mod:`.report` (results.md/json and
plots from the run records alone), :mod:`.runner` (a study end to end). The command is tools/benchmark.py.
"""
from .profiles import LABELS, METHODS, PROFILES, VAL_SET, BenchmarkError  # noqa: F401
from .report import report  # noqa: F401
from .runner import run, time_steps  # noqa: F401
from .selection import choose_factor, judge_variant, select_weight  # noqa: F401
