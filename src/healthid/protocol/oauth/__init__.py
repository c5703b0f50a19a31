"""OAuth 2.0 / OpenID Connect request validation of the sectoral IdP (gemSpec_IDP_Sek).

One module per concept: :mod:`errors` (the one error hierarchy), :mod:`form` (form parameter
hygiene), :mod:`pkce` (RFC 7636, S256 only), :mod:`claims` (scopes and the OIDC ``claims``
parameter), :mod:`par` (RFC 9126 pushed authorization request), :mod:`authorize` (authorization
endpoint, consent, code, redirect) and :mod:`token` (token request, ID-token claim set).

Pure: no I/O. Clock values and randomness come in as arguments; the one-time artefacts
(request_uri, code) are consumed atomically by the store, not here.
"""
