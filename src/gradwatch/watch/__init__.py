"""Training-time collection: hooks, on-device accumulators, bounded history, run files."""

from gradwatch.watch.history import RecurrentSample, RunHistory
from gradwatch.watch.runfile import load_run
from gradwatch.watch.watch import Watch

__all__ = ["RecurrentSample", "RunHistory", "Watch", "load_run"]
