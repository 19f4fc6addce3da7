import sys

from mrsr.cli import main

sys.exit(main())
