"""Kernel family 'softmax_ce'. KERNELS names the functions every backend module defines."""

KERNELS = ()
