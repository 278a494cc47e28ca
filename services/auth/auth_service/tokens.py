"""RS256 access tokens: issue with the current key (header kid), verify against current + previous keys."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jwt

from .keys import SigningKeys
from .users import User

ALGORITHM = "RS256"
REQUIRED_CLAIMS = ["iss", "aud", "sub", "username", "iat", "exp", "jti"]
# Tolerated clock difference between the auth tasks that issue and verify a token.
IAT_LEEWAY_SECONDS = 30


@dataclass(frozen=True)
class IssuedToken:
    access_token: str
    expires_in: int


class Tokens:
    def __init__(
        self,
        keys: SigningKeys,
        *,
        issuer: str,
        audience: str,
        ttl_seconds: int,
        clock: Callable[[], float],
    ) -> None:
        self._keys = keys
        self._issuer = issuer
        self._audience = audience
        self._ttl = ttl_seconds
        self._clock = clock

    def issue(self, user: User) -> IssuedToken:
        keys = self._keys.get()
        now = int(self._clock())
        claims = {
            "iss": self._issuer,
            "aud": self._audience,
            "sub": user.user_id,
            "username": user.username,
            "iat": now,
            "exp": now + self._ttl,
            "jti": uuid.uuid4().hex,
        }
        token = jwt.encode(claims, keys.private_key, algorithm=ALGORITHM, headers={"kid": keys.kid})
        return IssuedToken(access_token=token, expires_in=self._ttl)

    def verify(self, token: str) -> dict[str, Any] | None:
        """Claims of a valid token, else None. Time checks use the injected clock, not PyJWT's."""
        keys = self._keys.get()
        try:
            header = jwt.get_unverified_header(token)
            key = keys.public_keys.get(header.get("kid", ""))
            if key is None or header.get("alg") != ALGORITHM:
                return None
            claims = jwt.decode(
                token,
                key,
                algorithms=[ALGORITHM],
                audience=self._audience,
                issuer=self._issuer,
                options={"require": REQUIRED_CLAIMS, "verify_exp": False, "verify_iat": False, "verify_nbf": False},
            )
        except jwt.PyJWTError:
            return None
        now = self._clock()
        exp, iat = claims["exp"], claims["iat"]
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (exp, iat)):
            return None
        if now >= exp or iat > now + IAT_LEEWAY_SECONDS:
            return None
        return claims
