"""Laplace Sample Information: how much a single training sample informs a model's weights.

    LSI(i) = KL( N(theta_D, P_D^-1) || N(theta_{D\\i}, P_{D\\i}^-1) )

Start with :func:`compute_lsi`; the CLI is ``lsi compute --help``.
"""
from lsi.api import compute_lsi, null_sample_lsi
from lsi.results import load_table, save_table

__all__ = ["compute_lsi", "load_table", "null_sample_lsi", "save_table"]
__version__ = "0.1.0"
