"""The Serai gateway (security server): IS side, peer side, signing, verification,
access rights, message log and metrics (DESIGN §4 to §7)."""
