import sys

from jndplug.cli import main

sys.exit(main())
