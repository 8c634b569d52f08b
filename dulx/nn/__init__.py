"""Reusable layers."""

from dulx.nn.masked_dense import MaskedDense
from dulx.nn.masked_dense import degree_mask
from dulx.nn.masked_conv import MaskedConv2D

__all__ = ['MaskedConv2D', 'MaskedDense', 'degree_mask']
