"""Framework glue: sinks for TensorBoard, W&B and CSV, and callbacks for Lightning and HF.

The sinks import their optional dependency when built. The callbacks live in their own
modules so that importing this package needs neither framework::

    from gradwatch.integrations.lightning import GradWatchCallback      # lightning.pytorch
    from gradwatch.integrations.transformers import GradWatchCallback   # transformers.Trainer
"""

from gradwatch.integrations.sinks import CSVSink, JSONLSink, TensorBoardSink, WandbSink

__all__ = ["CSVSink", "JSONLSink", "TensorBoardSink", "WandbSink"]
