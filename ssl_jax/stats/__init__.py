"""Statistics for the study: bootstrap CIs, paired tests, effect sizes, corrections."""

from .inference import (
    PairedResult,
    bootstrap_ci,
    cohens_dz,
    holm,
    paired_comparison,
    paired_ttest,
    wilcoxon,
)

__all__ = ["PairedResult", "bootstrap_ci", "cohens_dz", "holm", "paired_comparison",
           "paired_ttest", "wilcoxon"]
