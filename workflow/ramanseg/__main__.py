import sys

from ramanseg.cli import main

# Guarded: nnU-Net starts worker processes with "spawn", which re-imports this module.
if __name__ == "__main__":
    sys.exit(main())
