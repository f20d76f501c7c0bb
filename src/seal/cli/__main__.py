import sys

from seal.cli.commands import main

sys.exit(main())
