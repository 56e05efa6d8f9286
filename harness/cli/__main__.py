import sys

from metrolab.harness.cli import main

sys.exit(main())
