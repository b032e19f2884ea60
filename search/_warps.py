r"""Output warps of the GP engine: monotone maps applied to the values before standardising.

Values are minimised here (``y``: ``n x 1``). A diverged candidate's penalty AULC, orders of
magnitude above the rest, would otherwise flatten every other difference once standardised.
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor

WARPS = ("log1p", "power", "cap")


def standardize(y: Tensor, iqr: float = 3.0, warp: str = "power") -> Tensor:
    """``y`` (``n x 1``, to minimise) outlier-capped (:func:`cap_outliers`), warped (``"log1p"``,
    ``"power"``; ``"cap"``: none) and standardised to mean 0, standard deviation 1."""
    y = cap_outliers(y, iqr)
    if warp == "log1p":
        y = warp_log1p(y)
    elif warp == "power":
        y = warp_power(y)
    std = y.std() if y.numel() > 1 else torch.ones((), dtype=y.dtype)
    return (y - y.mean()) / (std if std > 0 else 1.0)


def cap_outliers(y: Tensor, iqr: float = 3.0) -> Tensor:
    """Cap values above the upper Tukey fence ``Q3 + iqr * IQR`` (``y``: ``n x 1``, to minimise).

    Non-finite values become the largest finite one. Order is preserved (monotone map).
    """
    y = y.clone()
    finite = torch.isfinite(y)
    if not finite.any():
        return torch.zeros_like(y)
    y[~finite] = y[finite].max()
    if y.numel() >= 4:
        q1, q3 = torch.quantile(y.flatten(), torch.tensor([0.25, 0.75], dtype=y.dtype))
        spread = q3 - q1
        if spread > 0:
            y = y.clamp(max=float(q3 + iqr * spread))
    return y


def warp_log1p(y: Tensor) -> Tensor:
    r"""Monotone output warp for minimisation (``y``: ``n x 1``):

    .. math:: y' = \log\!\left(1 + \frac{y - \min y}{s}\right), \qquad s = \operatorname{median}(y - \min y)

    Near the incumbent differences stay almost linear; a diverged candidate's penalty, orders of
    magnitude above, is compressed to a few units instead of flattening everything else.
    """
    gap = y - y.min()
    s = gap.median()
    if not s > 0:
        s = gap.max() if gap.max() > 0 else torch.ones((), dtype=y.dtype)
    return torch.log1p(gap / s)


def warp_power(y: Tensor) -> Tensor:
    r"""Yeo-Johnson power warp (``y``: ``n x 1``), its exponent :math:`\lambda` by maximum likelihood
    (``scipy.stats.yeojohnson``) on the standardised values, as in HEBO (Cowen-Rivers et al. 2022):

    .. math:: \psi_\lambda(z) = ((z + 1)^\lambda - 1)/\lambda \;(z \ge 0), \qquad
              -((1 - z)^{2 - \lambda} - 1)/(2 - \lambda) \;(z < 0)

    Monotone for every :math:`\lambda`; a heavy upper tail gets :math:`\lambda < 1` (log-like),
    near-Gaussian values :math:`\lambda \approx 1` (left as they are).
    """
    from scipy.stats import yeojohnson

    std = y.std() if y.numel() > 1 else torch.zeros((), dtype=y.dtype)
    if not std > 0:
        return torch.zeros_like(y)
    z = ((y - y.mean()) / std).flatten().numpy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out, _ = yeojohnson(z)
    out = torch.as_tensor(out, dtype=y.dtype).reshape(y.shape)
    return out if torch.isfinite(out).all() else torch.as_tensor(z, dtype=y.dtype).reshape(y.shape)
