"""Repository tools that run outside the CDK app (``python -m tools.<name>``)."""
