"""mirrorattn: l_p mirror descent for softmax attention (arXiv 2410.14581), made practical."""

from mirrorattn.mirror import (
    bregman_divergence,
    directional_bregman,
    inverse_mirror_map,
    lp_norm,
    lp_potential,
    mirror_map,
)

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "bregman_divergence",
    "directional_bregman",
    "inverse_mirror_map",
    "lp_norm",
    "lp_potential",
    "mirror_map",
]
