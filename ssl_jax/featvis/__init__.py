"""Feature visualisation: activation maximisation of units, channels, SAE features, heads."""

from ssl_jax.featvis.core import (
           COLOR_BASIS,
           Objective,
           VisConfig,
           VisResult,
           init_image,
           random_affine,
           to_rgb,
           total_variation,
           visualize,
)

__all__ = ["COLOR_BASIS", "Objective", "VisConfig", "VisResult", "init_image", "random_affine",
           "to_rgb", "total_variation", "visualize"]
