"""peft-bench: measure which parameter-efficient fine-tuning method to use."""
import logging

__version__ = "0.1.0"

# bitsandbytes warns at import that an optional 4-bit CPU kernel (from the Hub) is missing; 8-bit does not
# use it, and the warning would bury the CLI's own one-line errors.
logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
