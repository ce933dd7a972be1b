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
