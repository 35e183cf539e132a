"""JWT verification at connect and refresh (RFC 8725): pinned algorithms, required claims, no key from the token."""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import jwt

from .errors import AuthError
from .settings import Settings

_HMAC = ("HS256", "HS384", "HS512")
_ASYMMETRIC = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA")
_SUBJECT = re.compile(r"^[A-Za-z0-9_.@-]{1,128}$")
AUTH_FAILED = "Authentication failed"


@dataclass(frozen=True, slots=True)
class Claims:
    user_id: str
    expires_at: float


def token_from_handshake(environ: Mapping[str, Any], auth: object) -> str | None:
    """The bearer token from `auth.token` or the `Authorization` header; never the query string or cookies."""
    if isinstance(auth, Mapping):
        token = auth.get("token")
        if token is not None:
            if not isinstance(token, str):
                raise AuthError("token must be a string", code="token_malformed")
            return token or None
    header = environ.get("HTTP_AUTHORIZATION")
    if isinstance(header, str):
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    return None


class TokenVerifier:
    """Verifies access tokens against the configured keys and claims; raises AuthError with a reason code."""

    def __init__(self, settings: Settings) -> None:
        algorithms = tuple(settings.jwt_algorithms)
        unknown = [a for a in algorithms if a not in _HMAC + _ASYMMETRIC]
        if not algorithms or unknown:
            raise ValueError(f"BLOCKS_RT_JWT_ALGORITHMS: unsupported {unknown or 'empty list'} (never 'none')")
        self._keys: dict[str, Any] = {}
        if any(a in _HMAC for a in algorithms):
            secret = settings.jwt_secret
            if not secret or len(secret.encode()) < 32:
                raise ValueError("BLOCKS_RT_JWT_SECRET must be at least 32 bytes for HMAC algorithms")
            if settings.api_key and secret == settings.api_key:
                raise ValueError("BLOCKS_RT_JWT_SECRET and BLOCKS_RT_API_KEY must differ")
            self._keys.update({a: secret for a in algorithms if a in _HMAC})
        if any(a in _ASYMMETRIC for a in algorithms):
            if settings.jwt_public_key_file is None:
                raise ValueError("asymmetric JWT algorithms need BLOCKS_RT_JWT_PUBLIC_KEY_FILE")
            public_key = settings.jwt_public_key_file.read_text()
            self._keys.update({a: public_key for a in algorithms if a in _ASYMMETRIC})
        self._settings = settings

    def verify(self, token: str | None) -> Claims:
        s = self._settings
        if not token:
            raise AuthError("no token provided", code="token_missing")
        if len(token) > s.max_token_bytes:
            raise AuthError("token too large", code="token_too_large")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise AuthError("token is not a JWT", code="token_malformed") from None
        alg = header.get("alg")
        # The key is chosen by our configuration for the token's algorithm, never by kid/jku/x5u/jwk.
        if not isinstance(alg, str) or alg not in self._keys:
            raise AuthError("token algorithm not allowed", code="token_algorithm")
        options = {"require": ["exp", "sub"], "verify_aud": s.jwt_audience is not None,
                   "verify_iss": s.jwt_issuer is not None}
        try:
            claims = jwt.decode(token, self._keys[alg], algorithms=[alg], options=options,  # type: ignore[arg-type]
                                audience=s.jwt_audience, issuer=s.jwt_issuer, leeway=s.jwt_leeway_s)
        except jwt.ExpiredSignatureError:
            raise AuthError("token expired", code="token_expired") from None
        except jwt.ImmatureSignatureError:
            raise AuthError("token not yet valid", code="token_not_yet_valid") from None
        except jwt.InvalidIssuerError:
            raise AuthError("wrong issuer", code="token_issuer") from None
        except jwt.InvalidAudienceError:
            raise AuthError("wrong audience", code="token_audience") from None
        except jwt.MissingRequiredClaimError as exc:
            raise AuthError(f"claim {exc.claim} required", code="token_claims") from None
        except jwt.InvalidSignatureError:
            raise AuthError("bad signature", code="token_signature") from None
        except (jwt.PyJWTError, ValueError, TypeError):
            raise AuthError("token invalid", code="token_invalid") from None
        sub = claims.get("sub")
        if not isinstance(sub, str) or not _SUBJECT.match(sub):
            raise AuthError("bad subject", code="token_subject")
        exp = claims.get("exp")
        if not isinstance(exp, int | float) or isinstance(exp, bool):
            raise AuthError("bad expiry", code="token_claims")
        return Claims(user_id=sub, expires_at=float(exp))


def mint_token(settings: Settings, user_id: str, ttl_s: float = 3600, **extra: Any) -> str:
    """An HS256 access token for `user_id` signed with the configured secret (CLI, notebooks, tests)."""
    if not settings.jwt_secret:
        raise ValueError("no BLOCKS_RT_JWT_SECRET to sign with")
    now = int(time.time())
    claims: dict[str, Any] = {"sub": user_id, "iat": now, "exp": now + int(ttl_s)}
    if settings.jwt_issuer:
        claims["iss"] = settings.jwt_issuer
    if settings.jwt_audience:
        claims["aud"] = settings.jwt_audience
    claims.update(extra)
    return jwt.encode(claims, settings.jwt_secret, algorithm="HS256")
