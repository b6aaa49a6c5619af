"""ssmrepro: a reproducibility harness for SEM-Net and EVSSM."""

__version__ = "0.1.0"
