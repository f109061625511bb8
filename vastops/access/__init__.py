"""Who did it, and who may: roles, named dashboard accounts and API keys.

- ``roles``: the four roles (viewer, reporter, operator, admin), what each permits, and
  ``require``, the one check the REST API, the dashboard and the CLI ask.
- ``hashing``: passwords as salted scrypt hashes, keys as SHA-256 digests; new keys.
- ``accounts``: ``Accounts`` (add, remove, log in, audited by name), ``Principal`` (who acts),
  the two names the configuration gives (``CONTROL_API_KEY``, the dashboard password's ``owner``).
- ``keyring``: ``KeyRing``, the watchdog's answer to "whose X-API-Key is this?", fresh from the
  ledger on every request (a revoked key is refused at once).
- ``commands``: ``vastops user`` and ``vastops key``.

The person behind an act reaches the audit row as ``vocabulary.By`` (an actor with a name).
"""
