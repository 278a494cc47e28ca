from .acknowledgments import acknowledge_nag, arn_as_nag_shows
from .provider_resources import adopt_cdk_providers
from .skips import skip_cfn_lint, skip_checkov, skip_role_dependency_lint

__all__ = ["acknowledge_nag", "adopt_cdk_providers", "arn_as_nag_shows", "skip_cfn_lint", "skip_checkov", "skip_role_dependency_lint"]
