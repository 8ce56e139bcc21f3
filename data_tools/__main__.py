"""``python -m data_tools {convert,laion,merge,validate,stats,inspect} --help``."""

from data_tools.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
