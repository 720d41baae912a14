import sys

from mirrorattn.cli import main

sys.exit(main())
