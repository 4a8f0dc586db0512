"""One module per ``cyconv`` sub-command: ``add_parser(subparsers)`` registers it and sets
``handler``; ``cyconv/cli.py`` lists them in ``COMMANDS``."""
