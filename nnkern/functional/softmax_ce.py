"""Op surface of the 'softmax_ce' kernel family (validation and dispatch)."""

__all__ = []
