import sys

from wrapresolver.cli import main

sys.exit(main())
