"""The Serai registry (central server): members, subsystems, gateways, trust services,
and the signed global configuration (DESIGN §3)."""

# First: importing serai sets the TLS policy before any module here imports grpc.
import serai as _serai  # noqa: F401
