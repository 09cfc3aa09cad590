"""peft-bench: measure which parameter-efficient fine-tuning method to use."""
__version__ = "0.1.0"
