"""gradwatch: make the learning signal of a PyTorch model visible.

Example:
    >>> import gradwatch as gw
    >>> str(gw.chain_bound("sigmoid", 30))
    '8.67e-19'

``gw.report("run.jsonl", "report.html")`` writes the HTML report of a saved Watch run.
"""

from __future__ import annotations

from gradwatch import fix, report
from gradwatch.core import meanfield
from gradwatch.core.adjoint import AdjointResult, adjoint
from gradwatch.core.bptt import BPTTProfile, bptt_profile
from gradwatch.core.chain import ChainProduct, chain_bound, chain_product, derivative_bound
from gradwatch.core.jacobian import (
    JacobianSpectrum,
    LayerwiseSpectrum,
    jacobian_spectrum,
    layerwise_spectrum,
)
from gradwatch.core.lyapunov import LyapunovSpectrum, lyapunov_spectrum
from gradwatch.core.meanfield import (
    DepthScales,
    PhaseDiagram,
    chi1,
    critical_sigma_w,
    depth_scales,
    phase_diagram,
    qstar,
)
from gradwatch.core.probe import ProbeResult, probe
from gradwatch.diagnose import Finding, diagnose
from gradwatch.watch import RunHistory, Watch, load_run

__version__ = "0.1.0"

__all__ = [
    "AdjointResult",
    "BPTTProfile",
    "ChainProduct",
    "DepthScales",
    "Finding",
    "JacobianSpectrum",
    "LayerwiseSpectrum",
    "LyapunovSpectrum",
    "PhaseDiagram",
    "ProbeResult",
    "RunHistory",
    "Watch",
    "__version__",
    "adjoint",
    "bptt_profile",
    "chain_bound",
    "chain_product",
    "chi1",
    "critical_sigma_w",
    "depth_scales",
    "derivative_bound",
    "diagnose",
    "fix",
    "jacobian_spectrum",
    "layerwise_spectrum",
    "load_run",
    "lyapunov_spectrum",
    "meanfield",
    "phase_diagram",
    "probe",
    "qstar",
    "report",
]
