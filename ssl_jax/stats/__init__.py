"""Statistics for the study: bootstrap CIs (percentile, BCa; JAX, explicit key), paired tests
with survival-function p-values, effect sizes, multiple-comparison corrections, one family of
paired comparisons (`compare_pairs`: test + bootstrap CI + Holm, what compare and shift use),
all-pairs comparison and ranking."""

from ssl_jax.stats.bootstrap import (
    BootstrapCI,
    bootstrap_ci,
    bootstrap_distribution,
    paired_bootstrap_ci,
)
from ssl_jax.stats.compare import (
    Comparison,
    Ranked,
    compare_all_models,
    compare_pairs,
    rank_models,
)
from ssl_jax.stats.inference import (
    CORRECTIONS,
    PairedResult,
    benjamini_hochberg,
    bonferroni,
    choose_test,
    cohens_d,
    cohens_dz,
    correct,
    holm,
    multiple_comparison_correction,
    paired_comparison,
    paired_ttest,
    paired_ttest_full,
    shapiro_p,
    wilcoxon,
    wilcoxon_full,
)

__all__ = [
    "CORRECTIONS", "BootstrapCI", "Comparison", "PairedResult", "Ranked", "benjamini_hochberg",
    "bonferroni", "bootstrap_ci", "bootstrap_distribution", "choose_test", "cohens_d",
    "cohens_dz", "compare_all_models", "compare_pairs", "correct", "holm",
    "multiple_comparison_correction", "paired_bootstrap_ci", "paired_comparison", "paired_ttest",
    "paired_ttest_full", "rank_models", "shapiro_p", "wilcoxon", "wilcoxon_full",
]
