"""The README's Python examples run as written (a reader copies them first)."""

import re
from pathlib import Path

import numpy as np

import nnkern
from nnkern import layers

README = Path(__file__).resolve().parent.parent / "README.md"


def _python_blocks(section):
    text = README.read_text()
    start = text.index(f"## {section}")
    end = text.find("\n## ", start + 1)
    return re.findall(r"```python\n(.*?)```", text[start:end], re.DOTALL)


def test_backend_section_runs():
    rng = np.random.default_rng(0)
    scope = {"layers": layers, "nnkern": nnkern,
             "xa": rng.random((32, 1, 8, 8)).astype(np.float32),
             "xb": rng.random((32, 1, 8, 8)).astype(np.float32),
             "same": rng.integers(0, 2, 32).astype(np.float32)}
    blocks = _python_blocks("nnkern as the backend of your training script")
    assert len(blocks) == 3
    for block in blocks:
        exec(block.replace("epochs=5", "epochs=1, verbose=0"), scope)  # noqa: S102
    assert scope["w"].grad.shape == (8, 1, 3, 3) and scope["v"].grad.shape == (10, 128)
    assert scope["siamese"].count_params() == scope["encoder"].count_params()
