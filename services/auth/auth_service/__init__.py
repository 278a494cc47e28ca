"""auth: user registration, password login with throttling, RS256 access tokens and their JWKS."""
