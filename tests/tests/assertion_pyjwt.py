"""An origin in Python verifies the edge's assertions with PyJWT (the README's example).

Usage: assertion_pyjwt.py EDGE_JWKS_URL ORIGIN EDGE_ISSUER < assertions, one per line.
Prints one JSON line per assertion: {"identity": {...}} when it verifies, {"refused": "..."}
otherwise. Run by tests/tests/assertion_pyjwt.rs.
"""

import json
import sys

import jwt

ASSERTION_TYPE = "portcullis-assertion+jwt"


class EdgeAssertions:
    """Checks X-Portcullis-Assertion against the keys the edge publishes."""

    def __init__(self, jwks_url, origin, edge_issuer="portcullis-edge"):
        # Fetched on first use, kept 5 minutes (the edge's max-age), fetched again for a new kid.
        self.keys = jwt.PyJWKClient(jwks_url, cache_jwk_set=True, lifespan=300)
        self.origin = origin  # the edge's ORIGIN_URL, exactly
        self.edge_issuer = edge_issuer  # the edge's ASSERTION_ISSUER

    def identity(self, assertion):
        """Who the edge vouches for; raises jwt.PyJWTError (answer 401) for anything else."""
        header = jwt.get_unverified_header(assertion)
        if header.get("typ") != ASSERTION_TYPE:  # not an access token, ID token, ...
            raise jwt.InvalidTokenError("not an edge assertion")
        key = self.keys.get_signing_key_from_jwt(assertion)  # by kid
        claims = jwt.decode(
            assertion,
            key.key,
            algorithms=["ES256"],
            audience=self.origin,
            issuer=self.edge_issuer,
            leeway=5,
            options={"require": ["iss", "aud", "sub", "iat", "exp", "jti"]},
        )
        if claims["exp"] - claims["iat"] > 300:
            raise jwt.InvalidTokenError("an assertion lives 5 minutes at most")
        return {"subject": claims["sub"], "roles": claims.get("roles", []), "token_id": claims.get("token_jti")}


def main() -> int:
    jwks_url, origin, edge_issuer = sys.argv[1:4]
    edge = EdgeAssertions(jwks_url, origin, edge_issuer)
    for line in sys.stdin:
        try:
            print(json.dumps({"identity": edge.identity(line.strip())}))
        except jwt.PyJWTError as error:
            print(json.dumps({"refused": f"{type(error).__name__}: {error}"}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
