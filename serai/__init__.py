"""Serai: an interoperability gateway for e-government.

The ``serai`` package holds what every part shares: identifiers, the error tree and
its wire codes, and the ``serai`` command line. The parts themselves live in the
top-level packages ``certs``, ``registry``, ``gateway`` and ``adapters``.
"""

from serai import tlspolicy as _tlspolicy

__version__ = "0.1.0"

# Before anything imports grpc: gRPC core refuses TLS 1.2 in every Serai process.
_tlspolicy.apply()
