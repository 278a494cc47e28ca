from .github_oidc import ECR_PUSH_ACTIONS, GITHUB_OIDC_HOST, STS_AUDIENCE, GitHubOidc, cdk_lookup_role_arns

__all__ = ["ECR_PUSH_ACTIONS", "GITHUB_OIDC_HOST", "STS_AUDIENCE", "GitHubOidc", "cdk_lookup_role_arns"]
