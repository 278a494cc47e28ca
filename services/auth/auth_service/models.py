"""Request and response bodies (they are also the OpenAPI schema)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, Field, StringConstraints

# Case-insensitive: lower-cased before the pattern is checked, and stored lower-cased.
Username = Annotated[str, StringConstraints(to_lower=True, min_length=3, max_length=64, pattern=r"^[A-Za-z0-9._-]+$")]
NewPassword = Annotated[str, Field(min_length=12, max_length=128, description="12-128 characters")]


class RegisterRequest(BaseModel):
    username: Username = Field(description="3-64 characters of a-z 0-9 . _ - (case-insensitive)", examples=["alice"])
    password: NewPassword


class UserResponse(BaseModel):
    user_id: str
    username: str = Field(description="The username, lower-cased")


class LoginRequest(BaseModel):
    # Only length limits: a name that could never be registered is just an unknown user (401).
    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=128)


class TokenResponse(BaseModel):
    access_token: str
    token_type: Literal["Bearer"] = "Bearer"
    expires_in: int = Field(description="Seconds until the token expires")


class VerifyRequest(BaseModel):
    token: str = Field(min_length=1, max_length=8192)


class TokenClaims(BaseModel):
    iss: str
    aud: str | list[str]
    sub: str = Field(description="user_id")
    username: str
    iat: int
    exp: int
    jti: str


class VerifyResponse(BaseModel):
    active: bool
    claims: TokenClaims | None = Field(default=None, description="Present only when active")


class Jwk(BaseModel):
    kty: Literal["RSA"]
    kid: str
    use: Literal["sig"]
    alg: Literal["RS256"]
    n: str
    e: str


class Jwks(BaseModel):
    keys: list[Jwk]
