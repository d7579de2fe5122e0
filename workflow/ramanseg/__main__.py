import sys

from ramanseg.cli import main

sys.exit(main())
