"""python -m nanoproof COMMAND: the same as the `nanoproof` command."""
import sys

from nanoproof.commands import main

sys.exit(main())
