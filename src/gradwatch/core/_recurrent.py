"""Checks shared by the code that steps nn.RNN / nn.LSTM / nn.GRU one time step at a time."""

from __future__ import annotations

from torch import nn


def check_steppable(m: nn.RNNBase, arg: str) -> None:
    """Raise unless ``m`` can be run step by step: unidirectional, no random dropout masks."""
    name = type(m).__name__
    if m.bidirectional:
        raise ValueError(
            f"{arg}: {name} is bidirectional; its backward direction reads the future, so it "
            "is not a recurrence h_t -> h_t+1. Pass a unidirectional module."
        )
    if m.training and m.dropout > 0 and m.num_layers > 1:
        raise ValueError(
            f"{arg}: {name} has dropout={m.dropout} between layers and is in training mode; "
            f"stepping it would draw different masks. Call {arg}.eval() first."
        )
