"""Autoregressive likelihood models over discrete data."""

from dulx.models.autoregressive.histogram import Histogram
from dulx.models.autoregressive.histogram import fit_counts
from dulx.models.autoregressive.made import MADE
from dulx.models.autoregressive.pixelcnn import PixelCNN

__all__ = ['PixelCNN', 'Histogram', 'MADE', 'fit_counts']
