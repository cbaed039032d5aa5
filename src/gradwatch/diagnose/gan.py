"""A confident discriminator starving the generator under the saturating GAN loss."""

from __future__ import annotations

import math

import torch

from gradwatch.diagnose._stats import late
from gradwatch.diagnose.finding import Finding
from gradwatch.watch.history import RunHistory

STARVED = 1e-2  # generator gradient late in the run over its peak


def _generator_layers(h: RunHistory) -> list[int]:
    """Every watched layer outside the module named by ``meta["gan_discriminator"]``."""
    disc = h.meta.get("gan_discriminator")
    if not disc:
        return []
    return [i for i, n in enumerate(h.layers) if not (n == disc or n.startswith(f"{disc}."))]


def generator_norms(h: RunHistory) -> torch.Tensor | None:
    """(S,) the generator's total gradient norm per recorded step (None: no generator marked)."""
    gen = _generator_layers(h)
    if not gen:
        return None
    return h["grad_norm"][:, gen].nan_to_num(nan=0.0).square().sum(dim=1).sqrt()


def generator_ratio(h: RunHistory) -> float | None:
    """The rule's statistic: the generator's gradient norm, median over the last quarter of
    the run, over its peak (the largest median of the run's eight windows before that).

    The peak, not the first quarter: while D first learns a slope the generator's gradient
    rises, and a first-quarter median that includes the rise understated the fall.
    """
    g = generator_norms(h)
    if g is None or len(g) < 2:
        return None
    end = late(h).start
    w = max(1, end // 8)
    peak = max(float(g[i : i + w].median()) for i in range(0, max(end, 1), w))
    last = float(g[late(h)].median())
    return last / peak if 0 < peak < math.inf and math.isfinite(last) else None


def gan_findings(h: RunHistory) -> list[Finding]:
    ratio = generator_ratio(h)
    if h.meta.get("gan_loss") != "saturating" or ratio is None or ratio >= STARVED:
        return []
    disc = h.meta["gan_discriminator"]
    return [
        Finding(
            "gan_saturation",
            "warning",
            tuple(h.layers[i] for i in _generator_layers(h)),
            f"the generator's gradient fell to {ratio:.1e} of its peak as the "
            f"discriminator {disc!r} grew confident",
            "saturating generator loss log(1 - D(G(z))): its derivative in D's logit is "
            "-sigmoid(a), which vanishes when D rejects the samples (Goodfellow et al. 2014)",
            "use the non-saturating generator loss: minimise -log D(G(z)), i.e. "
            "F.binary_cross_entropy_with_logits(D(G(z)), ones)",
            {"generator_ratio": ratio},
        )
    ]
