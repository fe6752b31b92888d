"""Kernel family 'optim'. KERNELS names the functions every backend module defines."""

KERNELS = ()
