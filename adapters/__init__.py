"""The adapter SDK agency developers use to put an information system on the bus, and
the example agencies (tax, cadastre, property registration)."""

# First: importing serai sets the TLS policy before any module here imports grpc.
import serai as _serai  # noqa: F401
