"""Acceptance tests: the installed ``lightkeeper`` command run as a black box, in subprocesses."""
