"""Benchmarks that print figures (`pycam bench ...`); each imported only when its subcommand runs."""
