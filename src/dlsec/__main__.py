"""``python -m dlsec``."""

from dlsec.cli import main

if __name__ == "__main__":
    main()
