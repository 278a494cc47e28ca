from .acknowledgments import acknowledge_nag
from .provider_resources import adopt_cdk_providers
from .skips import skip_cfn_lint, skip_checkov

__all__ = ["acknowledge_nag", "adopt_cdk_providers", "skip_cfn_lint", "skip_checkov"]
