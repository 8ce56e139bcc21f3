"""yivl.models"""

import logging

# bitsandbytes (imported by peft, which yivl.models.lora uses) warns at import time that an optional CPU
# kernel package is missing; its built-in fallback is what we use on the CPU, so the warning is noise.
logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
