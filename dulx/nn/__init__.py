"""Reusable layers."""

from dulx.nn.conv import Conv
from dulx.nn.conv import same_conv
from dulx.nn.masked_dense import MaskedDense
from dulx.nn.masked_dense import degree_mask
from dulx.nn.masked_conv import MaskedConv2D

__all__ = ['Conv', 'MaskedConv2D', 'MaskedDense', 'degree_mask', 'same_conv']
