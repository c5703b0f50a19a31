"""OpenID Connect as profiled by gematik for the sectoral IdP (claims, acr/amr)."""
