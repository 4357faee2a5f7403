"""The Serai registry (central server): members, subsystems, gateways, trust services,
and the signed global configuration (DESIGN §3)."""
