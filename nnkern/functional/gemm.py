"""Op surface of the 'gemm' kernel family (validation and dispatch)."""

__all__ = []
