"""The trainer: one worker of a distributed GraphSAGE link-prediction job (``python -m trainer``)."""

import os

# Transparent huge pages for torch's large CPU buffers. Every step allocates a few hundred MB
# afresh (subgraph features, layer outputs, their gradients); with 4 KiB pages that is ~10^5
# page faults a step, about a fifth of the step's time on a 2-core machine (benchmarks/
# efficiency.py). torch reads this at its first CPU allocation, so it is set here, before any
# trainer module imports torch. Set THP_MEM_ALLOC_ENABLE=0 to turn it off.
os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")
