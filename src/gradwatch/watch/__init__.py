"""Training-time collection: hooks, on-device accumulators, bounded history, run files."""

from gradwatch.watch.history import RecurrentSample, RunHistory
from gradwatch.watch.runfile import JSONLSink, Sink, load_run
from gradwatch.watch.watch import Watch

__all__ = ["JSONLSink", "RecurrentSample", "RunHistory", "Sink", "Watch", "load_run"]
