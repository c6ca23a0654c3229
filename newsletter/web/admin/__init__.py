"""The operator console, served by ``newsletter web`` under ``/admin``.

Every route sits behind :class:`Gate`, an ASGI middleware wrapped around the whole
console, so a route added later is protected without anyone remembering to: only
the login page and the stylesheet are public (``PUBLIC``). The console reads the
database and calls the library (status, ledger, runs, subscribers); it has no
planning, rendering or sending code of its own.
"""

from newsletter.web.admin.routes import PREFIX, PUBLIC, create_admin

__all__ = ["PREFIX", "PUBLIC", "create_admin"]
