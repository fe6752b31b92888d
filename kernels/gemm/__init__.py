"""Kernel family 'gemm'. KERNELS names the functions every backend module defines."""

KERNELS = ()
