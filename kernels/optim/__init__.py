"""Kernel family 'optim': in-place optimizer updates over flat parameter buffers.

Every backend module (reference.py, cpu.py, cuda.py) defines the functions in
``KERNELS`` with one signature. All arrays are 1-D, contiguous, one dtype and
one length (the model layer keeps every parameter of one dtype as a view into
one flat buffer, so a training step is one call):

    sgd_step(p, g, buf, lr, momentum, weight_decay, nesterov)
        updates p (and buf when momentum > 0) in place.
    adam_step(p, g, m, v, step, lr, beta1, beta2, eps, weight_decay)
        updates p, m, v in place; step is the 1-based step count.

g is never written. Semantics are torch.optim.SGD (dampening 0) and
torch.optim.Adam (amsgrad off, L2 weight decay added to the gradient).
"""

KERNELS = ("sgd_step", "adam_step")
