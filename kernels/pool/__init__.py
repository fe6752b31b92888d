"""Kernel family 'pool'. KERNELS names the functions every backend module defines."""

KERNELS = ()
