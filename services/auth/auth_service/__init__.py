"""auth: user registration, password login with lockout, RS256 access tokens and their JWKS."""
