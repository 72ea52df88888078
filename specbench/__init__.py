"""specbench: check published speculative-decoding claims with matched backends."""

__version__ = "0.1.0"
