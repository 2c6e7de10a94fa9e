import sys

from jndplug.cli.datagen import main

sys.exit(main())
