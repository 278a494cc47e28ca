from .built_layer import ARCHITECTURE, LAYER_TARGET, RUNTIME, built_layer

__all__ = ["ARCHITECTURE", "LAYER_TARGET", "RUNTIME", "built_layer"]
