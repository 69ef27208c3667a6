"""Human- and machine-readable outputs: tables, JSON, atomic files."""
