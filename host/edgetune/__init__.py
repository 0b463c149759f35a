"""edgetune: on-device int8 fine-tuning for MicroPython microcontrollers (host toolchain)."""

__version__ = "0.1.0"
