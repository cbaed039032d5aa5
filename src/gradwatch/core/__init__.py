"""Pure math on tensors: no hooks, no I/O, no plotting."""
