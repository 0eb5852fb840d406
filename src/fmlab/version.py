"""fmlab's version, on the bottom floor: env (provenance) and cli (--version) read it without importing the
package's __init__, whose lazy re-exports reach up to the api."""

__version__ = "0.1.0"
