"""The index rules of the pool family, written once in plain Python.

reference.py calls them as they are; cpu.py compiles them with ``numba.njit``
and cuda.py with ``numba.cuda.jit(device=True)``. So they use scalar integer
and float arithmetic, ``min``/``max`` and loops only (no NumPy, no lists).

Names: an input axis of size H, a window of R taps at stride SH with PH cells
of padding on each side (max and average pooling); a binomial blur filter of
K taps (blur pooling: reflect padding of pad_before(K) and pad_after(K)).

    >>> pool_out(28, 2, 2, 0), blur_out(7, 2), reflect(-1, 5), reflect(5, 5)
    (14, 4, 1, 3)
    >>> [binomial_tap(3, r) for r in range(3)]
    [0.25, 0.5, 0.25]
"""


def pool_out(H, R, SH, PH):
    """Output size of max/avg pooling: windows of R taps at stride SH over H + 2*PH cells."""
    return (H + 2 * PH - R) // SH + 1


def blur_out(H, SH):
    """Output size of blur pooling at stride SH (the padding keeps every position)."""
    return (H - 1) // SH + 1


def max_blur_out(H, R, SH):
    """Output size of max-blur pooling: an R-tap max at stride 1, then a blur at stride SH."""
    return blur_out(H - R + 1, SH)


def pad_before(K):
    """Reflect padding before the axis for a blur filter of K taps: (K - 1) // 2."""
    return (K - 1) // 2


def pad_after(K):
    """Reflect padding after the axis for a blur filter of K taps: ceil((K - 1) / 2)."""
    return K // 2


def reflect(i, H):
    """The input index that padded position i copies, for i in [-(H-1), 2*(H-1)]:
    reflection about the first and the last cell, which are not repeated."""
    if i < 0:
        i = -i
    if i > H - 1:
        i = 2 * (H - 1) - i
    return i


def binomial_tap(K, r):
    """Tap r of the normalised binomial filter of K taps: C(K-1, r) / 2^(K-1) (sums to 1)."""
    c = 1.0
    for j in range(r):
        c = c * (K - 1 - j) / (j + 1)
    return c / (1 << (K - 1))


def first_window(h, R, SH, PH):
    """The first output position whose window (o*SH - PH .. o*SH - PH + R - 1) holds input h."""
    return max(0, -((R - 1 - h - PH) // SH))


def last_window(h, OH, SH, PH):
    """The last output position (of OH) whose window holds input h; < first_window: none."""
    return min(OH - 1, (h + PH) // SH)
