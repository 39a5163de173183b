import sys

from connectors.collect.commands import main

sys.exit(main())
