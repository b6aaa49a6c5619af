"""Importing this registers every metric protocol in ``ssmrepro.registry.METRICS``."""

from . import fid, fullref, perceptual, realblur  # noqa: F401
