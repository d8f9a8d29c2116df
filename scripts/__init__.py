"""The command-line programs (python scripts/NAME.py, or nanoproof COMMAND once installed: harness/commands.py)."""
