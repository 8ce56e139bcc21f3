"""Training: the LightningModule, stage freezing, adapters, strategies, checkpoints, export (train.py)."""

import logging

# bitsandbytes (imported by peft) warns at import time that an optional CPU kernel package is missing;
# its built-in fallback is what we use on the CPU, so the warning is noise.
logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
