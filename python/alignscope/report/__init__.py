"""Human-readable outputs: tables, plots, HTML reports (nothing below this package imports it)."""
