"""Command-line tools over yivl.data: convert, laion, validate, stats, inspect (``python -m data_tools``)."""
