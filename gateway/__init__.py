"""The Serai gateway (security server): IS side, peer side, signing, verification,
access rights, message log and metrics (DESIGN §4 to §7)."""

# First: importing serai sets the TLS policy before any module here imports grpc.
import serai as _serai  # noqa: F401
