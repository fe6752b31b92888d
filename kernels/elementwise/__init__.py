"""Kernel family 'elementwise'. KERNELS names the functions every backend module defines.

Layouts the op surface hands to the kernels (all C-contiguous):
  activations, dropout   flat (n,) arrays
  softmax, log_softmax   (A, L, B): the softmax axis of length L in the middle,
                         A = product of the dims before it, B = product after it
  bias_add               x (N, C, S) with S = H*W (1 for a 2-D x), b (C,)

Dropout's keep mask is a pure function of (seed, flat element index) through
the counter-based hash ``splitmix64``; every backend computes it with the
same 64-bit unsigned arithmetic, so masks are bit-identical across backends.
"""

KERNELS = (
    "relu_forward",
    "relu_backward",
    "sigmoid_forward",
    "sigmoid_backward",
    "tanh_forward",
    "tanh_backward",
    "softmax_forward",
    "softmax_backward",
    "log_softmax_forward",
    "log_softmax_backward",
    "bias_add_forward",
    "bias_add_backward",
    "dropout_apply",
)

# splitmix64 constants (Steele, Lea & Flood 2014): the Weyl increment (golden ratio
# times 2^64) and the two multipliers of the finaliser.
SPLITMIX_GAMMA = 0x9E3779B97F4A7C15
SPLITMIX_M1 = 0xBF58476D1CE4E5B9
SPLITMIX_M2 = 0x94D049BB133111EB


def dropout_threshold(p):
    """The 32-bit threshold: an element is kept when the top 32 bits of its hash
    are >= floor(p * 2^32), so the keep probability is 1 - p (to 2^-32)."""
    return int(p * 4294967296.0)
