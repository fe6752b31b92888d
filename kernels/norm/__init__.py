"""Kernel family 'norm'. KERNELS names the functions every backend module defines."""

KERNELS = ()
