"""A confident discriminator starving the generator under the saturating GAN loss."""

from __future__ import annotations

import torch

from gradwatch.diagnose._stats import early, late
from gradwatch.diagnose.finding import Finding
from gradwatch.watch.history import RunHistory

STARVED = 1e-2  # generator gradient late in the run over early in the run


def gan_findings(h: RunHistory) -> list[Finding]:
    disc, loss = h.meta.get("gan_discriminator"), h.meta.get("gan_loss")
    if not disc or loss != "saturating" or len(h) < 2:
        return []
    gen = [i for i, n in enumerate(h.layers) if not (n == disc or n.startswith(disc + "."))]
    if not gen:
        return []
    g = h["grad_norm"][:, gen].nan_to_num(nan=0.0).square().sum(dim=1).sqrt()  # (S,)
    first, last = float(g[early(h)].median()), float(g[late(h)].median())
    if first <= 0 or not torch.isfinite(torch.tensor(last)) or last >= STARVED * first:
        return []
    return [
        Finding(
            "gan_saturation",
            "warning",
            tuple(h.layers[i] for i in gen),
            f"the generator's gradient fell to {last / first:.1e} of its early value as the "
            f"discriminator {disc!r} grew confident",
            "saturating generator loss log(1 - D(G(z))): its derivative in D's logit is "
            "-sigmoid(a), which vanishes when D rejects the samples (Goodfellow et al. 2014)",
            "use the non-saturating generator loss: minimise -log D(G(z)), i.e. "
            "F.binary_cross_entropy_with_logits(D(G(z)), ones)",
            {"generator_ratio": last / first},
        )
    ]
