"""`python -m metrolab`: the console command."""

from metrolab.harness.cli import main

raise SystemExit(main())
