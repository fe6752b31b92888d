"""Op surface of the 'optim' kernel family (validation and dispatch)."""

__all__ = []
