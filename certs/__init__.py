"""Serai's PKI: certificate authority and profiles, key files, certificate path
validation, an OCSP responder and client (RFC 6960), and a time-stamping authority and
client (RFC 3161)."""

# First: importing serai sets the TLS policy before any module here imports grpc.
import serai as _serai  # noqa: F401
