"""Cross-check: verify a Portcullis access token with PyJWT, using the issuer's served JWKS.

Usage: pyjwt_check.py BASE_URL TOKEN AUDIENCE
Exits 0 and prints the verified claims as JSON when the token verifies and a tampered copy
does not; exits 1 with a message otherwise. Run by issuer/tests/integration/pyjwt.rs.
"""

import json
import sys
import urllib.request

import jwt


def main() -> int:
    base_url, token, audience = sys.argv[1:4]
    with urllib.request.urlopen(f"{base_url}/.well-known/openid-configuration") as response:
        discovery = json.load(response)
    issuer = discovery["issuer"]
    jwks_client = jwt.PyJWKClient(discovery["jwks_uri"], cache_keys=False)

    header = jwt.get_unverified_header(token)
    if header.get("typ") != "at+jwt" or header.get("alg") != "ES256" or not header.get("kid"):
        print(f"unexpected header: {header}", file=sys.stderr)
        return 1
    signing_key = jwks_client.get_signing_key_from_jwt(token)
    claims = jwt.decode(
        token,
        signing_key.key,
        algorithms=["ES256"],
        audience=audience,
        issuer=issuer,
        options={"require": ["exp", "iat", "nbf", "iss", "aud", "sub", "jti"]},
    )

    head, payload, signature = token.split(".")
    tampered_signature = ("A" if signature[0] != "A" else "B") + signature[1:]
    try:
        jwt.decode(f"{head}.{payload}.{tampered_signature}", signing_key.key, algorithms=["ES256"], audience=audience, issuer=issuer)
    except jwt.InvalidSignatureError:
        pass
    else:
        print("a tampered token verified", file=sys.stderr)
        return 1

    print(json.dumps({"header": header, "claims": claims}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
