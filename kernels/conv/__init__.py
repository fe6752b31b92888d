"""Kernel family 'conv'. KERNELS names the functions every backend module defines."""

KERNELS = ()
