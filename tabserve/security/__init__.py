"""Security: keys, tokens, scopes, users, the login guard and the auth state store.

Builds on the core only; knows nothing of HTTP frameworks or BentoML.
"""
