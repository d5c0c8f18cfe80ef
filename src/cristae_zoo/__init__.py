"""cristae-zoo: DeepCristae and related restoration networks for live-cell mitochondria microscopy."""

__version__ = "0.1.0"
