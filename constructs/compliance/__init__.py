from .acknowledgments import acknowledge_nag
from .provider_resources import CdkProviderResources
from .skips import skip_checkov

__all__ = ["CdkProviderResources", "acknowledge_nag", "skip_checkov"]
