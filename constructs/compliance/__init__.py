from .acknowledgments import acknowledge_nag
from .skips import CdkProviderHandlerSkips, skip_checkov

__all__ = ["CdkProviderHandlerSkips", "acknowledge_nag", "skip_checkov"]
