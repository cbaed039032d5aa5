"""What every lab takes and returns: LabConfig in, LabResult out (frozen, JSON round trip).

A claim's verdict is computed from the measured value and a threshold declared next to the
claim (``Claim.check``), never written by hand: if the measurement changes, so does the verdict.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch

from gradwatch._result import Result

SIZES = ("smoke", "quick", "full")
VERDICTS = ("holds", "does not hold", "inconclusive")


@dataclass(frozen=True)
class LabConfig(Result):
    """How big a lab run is, and with what seed.

    Attributes:
        size: "smoke" (seconds: the unit tests check the mechanics), "quick" (what
            ``make demo`` runs; big enough that verdicts mean something) or "full" (the
            papers' sizes where that fits in an hour).
        seed: every random draw of the lab derives from it; same seed, same result.
        device: torch device for the lab's models.
    """

    size: str = "quick"
    seed: int = 0
    device: str = "cpu"

    def __post_init__(self) -> None:
        if self.size not in SIZES:
            raise ValueError(f"size: expected one of {', '.join(SIZES)}, got {self.size!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise TypeError(f"seed: expected an int, got {type(self.seed).__name__}")

    def pick(self, smoke: object, quick: object, full: object) -> object:
        """The value for this size: ``cfg.pick(2, 30, 100)``."""
        return {"smoke": smoke, "quick": quick, "full": full}[self.size]

    def generator(self, offset: int = 0) -> torch.Generator:
        return torch.Generator().manual_seed(self.seed * 1_000_003 + offset)


@dataclass(frozen=True)
class Claim(Result):
    """A sentence from the theory, what was measured, and the verdict with its rule.

    Attributes:
        statement: the claim, in one sentence.
        value: the number the verdict is computed from.
        rule: the threshold, in words ("< 1e-06").
        verdict: "holds", "does not hold", or "inconclusive" (the value is not finite).
        measured: other numbers that explain the value (shown in the report's table).
    """

    statement: str
    value: float
    rule: str
    verdict: str
    measured: dict[str, float] = field(default_factory=dict)

    @classmethod
    def check(
        cls,
        statement: str,
        value: float,
        *,
        below: float | None = None,
        above: float | None = None,
        measured: dict[str, float] | None = None,
    ) -> Claim:
        """Compute the verdict: holds when ``value < below`` and/or ``value > above``.

        Example:
            >>> Claim.check("0.25^30 is tiny", 0.25**30, below=1e-15).verdict
            'holds'
        """
        if below is None and above is None:
            raise ValueError("below/above: a claim needs at least one threshold")
        parts = []
        ok = True
        if above is not None:
            parts.append(f"> {above:g}")
            ok = ok and value > above
        if below is not None:
            parts.append(f"< {below:g}")
            ok = ok and value < below
        verdict = (
            "inconclusive" if not math.isfinite(value) else ("holds" if ok else "does not hold")
        )
        return cls(statement, float(value), " and ".join(parts), verdict, dict(measured or {}))


@dataclass(frozen=True)
class Series(Result):
    """One curve: y against x, with its legend label."""

    label: str
    x: tuple[float, ...]
    y: tuple[float, ...]


@dataclass(frozen=True)
class Plot(Result):
    """A figure the report draws from measured series (it computes nothing itself).

    Attributes:
        id: short identifier, unique within the lab (file name of the PNG export).
        title, xlabel, ylabel: what the figure and its axes say, with units.
        series: the curves.
        logx, logy: log scales where values span decades.
        kind: "line", "scatter" or "heatmap" (heatmap: each series is one row, x shared).
        reference: optional horizontal reference lines {label: y} (e.g. a bound).
    """

    id: str
    title: str
    xlabel: str
    ylabel: str
    series: tuple[Series, ...]
    logx: bool = False
    logy: bool = False
    kind: str = "line"
    reference: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Table(Result):
    """A table of measured numbers (strings, already formatted by the lab)."""

    title: str
    columns: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]


@dataclass(frozen=True)
class LabResult(Result):
    """Everything one lab measured and concluded."""

    name: str
    title: str
    config: LabConfig
    setup: dict[str, str]
    claims: tuple[Claim, ...]
    tables: tuple[Table, ...] = ()
    plots: tuple[Plot, ...] = ()
    seconds: float = 0.0  # wall time, set by run_lab


Listener = Callable[[str, int, int], None]  # (label, done, total)
_listeners: list[Listener] = []


def steps(n: int, label: str) -> Iterator[int]:
    """``range(n)`` for a lab's training loop that reports progress to whoever listens
    (the command line's progress bar); silent otherwise.

    Example:
        >>> for step in steps(100, "sigmoid MLP, depth 30"):   # doctest: +SKIP
        ...     train_one_step()
    """
    for i in range(n):
        yield i
        for listener in _listeners:
            listener(label, i + 1, n)


@contextlib.contextmanager
def listening(listener: Listener) -> Iterator[None]:
    """Receive (label, done, total) from every ``steps`` loop while the block runs."""
    _listeners.append(listener)
    try:
        yield
    finally:
        _listeners.remove(listener)


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """Run the block on one torch thread and one numpy/scipy BLAS thread, then restore the
    caller's settings (BLAS through threadpoolctl, when installed).

    The labs' models are small: on a shared 2-core CPU, torch's thread pool ran them 4-15x
    slower than one thread (workers waiting on each other), LAPACK's banded Cholesky 10-25x.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with contextlib.ExitStack() as stack:
            try:
                from threadpoolctl import threadpool_limits
            except ImportError:
                pass
            else:
                stack.enter_context(threadpool_limits(limits=1, user_api="blas"))
            yield
    finally:
        torch.set_num_threads(threads)
