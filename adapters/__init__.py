"""The adapter SDK agency developers use to put an information system on the bus, and
the example agencies (tax, cadastre, property registration)."""
