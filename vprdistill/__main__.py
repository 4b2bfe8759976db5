import sys

from vprdistill.cli.main import main

sys.exit(main())
