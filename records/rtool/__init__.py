"""The records tool as a package: logs (parsing), scripts (ast defaults, verification, packing),
stats (significance), one module per command, and cli (the argument parser and main)."""
