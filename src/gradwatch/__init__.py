"""gradwatch: make the learning signal of a PyTorch model visible."""

from __future__ import annotations

from gradwatch.core.adjoint import AdjointResult, adjoint
from gradwatch.core.bptt import BPTTProfile, bptt_profile
from gradwatch.core.chain import ChainProduct, chain_bound, chain_product, derivative_bound
from gradwatch.core.lyapunov import LyapunovSpectrum, lyapunov_spectrum
from gradwatch.core.probe import ProbeResult, probe
from gradwatch.diagnose import Finding, diagnose
from gradwatch.watch import RunHistory, Watch, load_run

__version__ = "0.1.0"

__all__ = [
    "AdjointResult",
    "BPTTProfile",
    "ChainProduct",
    "Finding",
    "LyapunovSpectrum",
    "ProbeResult",
    "RunHistory",
    "Watch",
    "__version__",
    "adjoint",
    "bptt_profile",
    "chain_bound",
    "chain_product",
    "derivative_bound",
    "diagnose",
    "load_run",
    "lyapunov_spectrum",
    "probe",
]
