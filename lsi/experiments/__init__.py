"""Helpers of the book's chapters: the paper's experiments as functions over the core.

The chapters call these; the core never imports them.

* :mod:`lsi.experiments.probe_studies` - the paper's probe experiments over :func:`lsi.compute_lsi`
  (data set size, feature and label noise, rankings over training, learnability); its functions are
  re-exported here, so ``from lsi import experiments; experiments.lsi_vs_size(...)``;
* :mod:`lsi.experiments.label_noise` - label-error settings, peer scores on them, TRAK beside LSI;
* :mod:`lsi.experiments.estimators` - sample-based KL estimators against the closed form (KDE chapter);
* :mod:`lsi.experiments.sui` - SUI on a linearised pretrained network (``sui_pretrained`` chapter).
"""
from lsi.experiments.probe_studies import (
    FAR_ABOVE, PAPER_TABLE1, table1, table1_frame, TABLE1_CLAIMS, table1_claims, certified_leave_one_out,
    nested_order, lsi_vs_size,
    regime_slopes, REGIMES, in_regime, scaling_claims, feature_noise_sweep, label_flip_run, binary_task,
    probe_accuracy, median_intervals, top_overlap, aligned, compare_rankings, lsi_during_training, settling_claims,
    rankings_over_training, lsi_with_notes, score_probes, slope_words, lsi_subsets, SUBSETS, learnability,
    by_subset, replicates_differ, seed_intervals, learnability_cost)

__all__ = ["FAR_ABOVE", "PAPER_TABLE1", "table1", "table1_frame", "TABLE1_CLAIMS", "table1_claims", "certified_leave_one_out", "nested_order", "lsi_vs_size", "regime_slopes", "REGIMES", "in_regime", "scaling_claims", "feature_noise_sweep", "label_flip_run", "binary_task", "probe_accuracy", "median_intervals", "top_overlap", "aligned", "compare_rankings", "lsi_during_training", "settling_claims", "rankings_over_training", "lsi_with_notes", "score_probes", "slope_words", "lsi_subsets", "SUBSETS", "learnability", "by_subset", "replicates_differ", "seed_intervals", "learnability_cost"]
