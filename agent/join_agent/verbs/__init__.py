"""The command-line verbs besides join, run and worker (cli.py dispatches them all): each
reads, judges or asks the daemon, prints, and exits. status, wait, renew and reload stay
on the standard library while the daemon runs, so that monitoring can call them often."""
