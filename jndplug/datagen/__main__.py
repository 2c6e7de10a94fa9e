import sys

from jndplug.datagen.cli import main

sys.exit(main())
