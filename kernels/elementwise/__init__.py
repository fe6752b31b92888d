"""Kernel family 'elementwise'. KERNELS names the functions every backend module defines."""

KERNELS = ()
