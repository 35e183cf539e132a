"""JWT verification at connect and refresh (RFC 8725): pinned algorithms, required claims, no key from the token."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from .errors import AuthError
from .settings import Settings

_HMAC = ("HS256", "HS384", "HS512")
_KEY_TYPES: dict[str, tuple[type, ...]] = {
    **{a: (rsa.RSAPublicKey,) for a in ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512")},
    **{a: (ec.EllipticCurvePublicKey,) for a in ("ES256", "ES384", "ES512")},
    "EdDSA": (ed25519.Ed25519PublicKey, ed448.Ed448PublicKey),
}
_SUBJECT = re.compile(r"[A-Za-z0-9_.@-]{1,128}")
AUTH_FAILED = "Authentication failed"
_KNOWN_HEADERS = 64


@dataclass(frozen=True, slots=True)
class Claims:
    user_id: str
    expires_at: float


@dataclass(frozen=True, slots=True)
class _Key:
    kid: str | None
    key: Any


def token_from_handshake(environ: Mapping[str, Any], auth: object) -> str | None:
    """The bearer token from `auth.token` or the `Authorization` header; never the query string or cookies."""
    if isinstance(auth, Mapping):
        token = auth.get("token")
        if token is not None:
            if not isinstance(token, str):
                raise AuthError("token must be a string", code="token_malformed")
            if token:  # an empty auth.token falls through to the header, as the design's `a || b` does
                return token
    header = environ.get("HTTP_AUTHORIZATION")
    if isinstance(header, str):
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    return None


def _public_key_file(path: Path) -> Any:
    key = load_pem_public_key(path.read_bytes())
    if not isinstance(key, tuple(t for types in _KEY_TYPES.values() for t in types)):
        raise ValueError(f"BLOCKS_RT_JWT_PUBLIC_KEY_FILE {path}: not an RSA, EC or Ed25519/Ed448 public key")
    return key


def _jwks_file(path: Path) -> list[tuple[str, _Key]]:
    """(algorithm, key) of every signing key in a JWKS file; symmetric (`oct`) keys are refused."""
    document = json.loads(path.read_text())
    keys = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(keys, list) or not keys:
        raise ValueError(f"BLOCKS_RT_JWT_JWKS_FILE {path}: expected {{\"keys\": [...]}} with at least one key")
    found = []
    for entry in keys:
        if not isinstance(entry, dict) or entry.get("kty") not in ("RSA", "EC", "OKP"):
            raise ValueError(f"BLOCKS_RT_JWT_JWKS_FILE {path}: only RSA, EC and OKP public keys are allowed")
        if entry.get("use", "sig") != "sig" or "d" in entry:
            raise ValueError(f"BLOCKS_RT_JWT_JWKS_FILE {path}: keys must be public signing keys (use 'sig', no 'd')")
        jwk = jwt.PyJWK.from_dict(entry)
        kid = entry.get("kid")
        found.append((jwk.algorithm_name, _Key(kid if isinstance(kid, str) else None, jwk.key)))
    return found


class TokenVerifier:
    """Verifies access tokens against the configured keys and claims; raises AuthError with a reason code.

    Keys come from our configuration only (`JWT_SECRET`, `JWT_PUBLIC_KEY_FILE`, `JWT_JWKS_FILE`), one list
    per allowed algorithm. A token's `kid` may pick among those keys; `jku`, `x5u`, `jwk` and `x5c` are
    never looked at, so a token can never bring or point to its own key.
    """

    def __init__(self, settings: Settings) -> None:
        algorithms = tuple(settings.jwt_algorithms)
        unknown = [a for a in algorithms if a not in _HMAC and a not in _KEY_TYPES]
        if not algorithms or unknown:
            raise ValueError(f"BLOCKS_RT_JWT_ALGORITHMS: unsupported {unknown or 'empty list'} (never 'none')")
        self._keys: dict[str, list[_Key]] = {a: [] for a in algorithms}
        if any(a in _HMAC for a in algorithms):
            secret = settings.jwt_secret
            if not secret or len(secret.encode()) < 32:
                raise ValueError("BLOCKS_RT_JWT_SECRET must be at least 32 bytes for HMAC algorithms")
            if settings.api_key and secret == settings.api_key:
                raise ValueError("BLOCKS_RT_JWT_SECRET and BLOCKS_RT_API_KEY must differ")
            for a in algorithms:
                if a in _HMAC:
                    self._keys[a].append(_Key(None, secret))
        if settings.jwt_public_key_file is not None:
            public_key = _public_key_file(settings.jwt_public_key_file)
            for a in algorithms:
                if a in _KEY_TYPES and isinstance(public_key, _KEY_TYPES[a]):
                    self._keys[a].append(_Key(None, public_key))
        if settings.jwt_jwks_file is not None:
            for a, key in _jwks_file(settings.jwt_jwks_file):
                if a in self._keys and a not in _HMAC:
                    self._keys[a].append(key)
        missing = [a for a, keys in self._keys.items() if not keys]
        if missing:
            raise ValueError(f"no key for {missing}: set BLOCKS_RT_JWT_PUBLIC_KEY_FILE or BLOCKS_RT_JWT_JWKS_FILE")
        self._settings = settings
        # One PyJWT with its options merged once (a call with options merges them with the defaults each time).
        # `aud` is always verified: a token meant for another audience is refused even when none is configured.
        self._jwt = jwt.PyJWT({"require": ["exp", "sub"], "verify_aud": True,
                               "verify_iss": settings.jwt_issuer is not None})
        self._known_headers: dict[str, tuple[str, list[_Key]]] = {}

    def _candidates(self, header: Mapping[str, Any]) -> list[_Key]:
        alg = header.get("alg")
        # The key is chosen by our configuration for the token's algorithm, never by jku/x5u/jwk/x5c.
        if not isinstance(alg, str) or alg not in self._keys:
            raise AuthError("token algorithm not allowed", code="token_algorithm")
        kid = header.get("kid")
        if kid is None:
            return self._keys[alg]
        if not isinstance(kid, str):
            raise AuthError("kid must be a string", code="token_header")
        named = [k for k in self._keys[alg] if k.kid == kid]
        candidates = named or [k for k in self._keys[alg] if k.kid is None]
        if not candidates:
            raise AuthError("unknown key id", code="token_key_unknown")
        return candidates

    def verify(self, token: str | None) -> Claims:
        """The token's claims, verified by PyJWT in one parse when its header is one a valid token had before.

        Tokens of one issuer share their header (alg, typ, kid), so the key choice made for the header of a
        token that verified is kept, and the next token with that same header segment is only decoded (the
        header alone would parse the whole token once more). A token refused as `token_invalid` that way
        takes the full path, whose parse names a malformed token as such.
        """
        if not token:
            raise AuthError("no token provided", code="token_missing")
        if len(token) > self._settings.max_token_bytes:
            raise AuthError("token too large", code="token_too_large")
        header_segment = token.partition(".")[0]
        known = self._known_headers.get(header_segment)
        if known is not None:
            try:
                return self._claims(self._decode(token, *known))
            except AuthError as exc:
                if exc.code != "token_invalid":
                    raise
        try:
            header = jwt.get_unverified_header(token)
        except (jwt.PyJWTError, ValueError, TypeError, RecursionError):
            raise AuthError("token is not a JWT", code="token_malformed") from None
        candidates = self._candidates(header)
        choice = str(header["alg"]), candidates
        claims = self._claims(self._decode(token, *choice))
        if len(self._known_headers) >= _KNOWN_HEADERS:  # only headers of verified tokens get here: a few
            self._known_headers.clear()
        self._known_headers[header_segment] = choice
        return claims

    @staticmethod
    def _claims(claims: dict[str, Any]) -> Claims:
        sub = claims.get("sub")
        if not isinstance(sub, str) or not _SUBJECT.fullmatch(sub):  # fullmatch: `$` lets a trailing newline in
            raise AuthError("bad subject", code="token_subject")
        exp = claims.get("exp")
        if not isinstance(exp, int | float) or isinstance(exp, bool):
            raise AuthError("bad expiry", code="token_claims")
        return Claims(user_id=sub, expires_at=float(exp))

    def _decode(self, token: str, alg: str, candidates: list[_Key]) -> dict[str, Any]:
        """Claims of the first candidate key the signature matches; only a bad signature moves on to the next."""
        for candidate in candidates[:-1]:
            try:
                return self._decode_with(token, alg, candidate.key)
            except AuthError as exc:
                if exc.code != "token_signature":
                    raise
        return self._decode_with(token, alg, candidates[-1].key)

    def _decode_with(self, token: str, alg: str, key: Any) -> dict[str, Any]:
        s = self._settings
        try:
            return self._jwt.decode(token, key, algorithms=[alg], audience=s.jwt_audience, issuer=s.jwt_issuer,
                                    leeway=s.jwt_leeway_s)
        except jwt.InvalidSignatureError:
            raise AuthError("bad signature", code="token_signature") from None
        except jwt.ExpiredSignatureError:
            raise AuthError("token expired", code="token_expired") from None
        except jwt.ImmatureSignatureError:
            raise AuthError("token not yet valid (nbf or iat in the future)", code="token_not_yet_valid") from None
        except jwt.InvalidIssuerError:
            raise AuthError("wrong issuer", code="token_issuer") from None
        except jwt.InvalidAudienceError:
            raise AuthError("wrong audience", code="token_audience") from None
        except jwt.MissingRequiredClaimError as exc:
            raise AuthError(f"claim {exc.claim} required", code="token_claims") from None
        except (jwt.PyJWTError, ValueError, TypeError, OverflowError, RecursionError):
            raise AuthError("token invalid", code="token_invalid") from None


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
