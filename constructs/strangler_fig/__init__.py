from .strangler_fig import StranglerFig

__all__ = ["StranglerFig"]
