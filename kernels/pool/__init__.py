"""Kernel family 'pool': max, average, blur (anti-aliased) and max-blur pooling, NCHW.

KERNELS names the functions every backend module (reference.py, cpu.py,
cuda.py) defines, with one signature per name shared by all three:

    max_pool2d_forward(x, y, indices, R, S, SH, SW, PH, PW)
    max_pool2d_backward(grad_out, indices, dx, R, S, SH, SW, PH, PW)
    avg_pool2d_forward(x, y, R, S, SH, SW, PH, PW, count_include_pad)
    avg_pool2d_backward(grad_out, dx, R, S, SH, SW, PH, PW, count_include_pad)
    blur_pool2d_forward(x, y, filt_size, SH, SW)
    blur_pool2d_backward(grad_out, dx, filt_size, SH, SW)
    max_blur_pool2d_forward(x, y, R, S, filt_size, SH, SW)
    max_blur_pool2d_backward(grad_out, x, dx, R, S, filt_size, SH, SW)

x/dx are (N, C, H, W), y/grad_out/indices are (N, C, OH, OW), all C-contiguous;
indices are int64, flat ``h * W + w`` into each input plane (as torch).
R, S: pooling window; SH, SW: stride; PH, PW: zero/-inf padding (max/avg).
"""

KERNELS = (
    "max_pool2d_forward",
    "max_pool2d_backward",
    "avg_pool2d_forward",
    "avg_pool2d_backward",
    "blur_pool2d_forward",
    "blur_pool2d_backward",
    "max_blur_pool2d_forward",
    "max_blur_pool2d_backward",
)
