import os

# This machine's CPU advertises AMX, but the VM does not enable AMX tile state, so oneDNN's
# AMX kernels (used by bf16 LSTM under CPU autocast) die with SIGILL. Cap oneDNN below AMX;
# must be set before torch is imported. A user's own environment is left alone.
os.environ.setdefault("ONEDNN_MAX_CPU_ISA", "AVX512_CORE_FP16")
