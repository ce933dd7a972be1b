"""The environment variables the package reads, and their defaults (one definition each)."""

#: Where commands and the IPython profile find the store (a directory or an http(s) URI).
STORE_ENV = "BAS_STORE"
#: The store directory when ``$BAS_STORE`` is not set (relative to the working directory).
DEFAULT_STORE = "bas-store"
#: The API key of a served store (``bas serve``'s write key); never read from a file or a flag.
API_KEY_ENV = "BAS_API_KEY"
#: ``bas serve``'s optional read-only key.
READ_KEY_ENV = "BAS_READ_API_KEY"
#: The spool directory, unless ``--spool`` says otherwise (default: ``ROOT/.bas-spool``).
SPOOL_ENV = "BAS_SPOOL"
#: ``0`` (or ``off``, ``no``, ``false``): open an embedded store in this process, held by it
#: alone, instead of through its local server (see :mod:`..store._local_server`).
LOCAL_SERVER_ENV = "BAS_LOCAL_SERVER"
#: Seconds an embedded store's local server stays up once no process has the store open.
IDLE_TIMEOUT_ENV = "BAS_LOCAL_SERVER_IDLE"
#: Its default: long enough that commands typed one after another find it still running.
DEFAULT_IDLE_TIMEOUT = 300.0
#: Set by ``bas serve --workers N`` for its worker processes: the store's directory, catalog
#: and tables URIs as JSON (the keys stay in their own variables).
SERVE_WORKER_ENV = "BAS_SERVE_WORKER"
