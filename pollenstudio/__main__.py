import sys

from pollenstudio.cli import main

sys.exit(main())
