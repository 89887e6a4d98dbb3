"""The verbs of the ``cryoshift`` command line, one module per verb (NAME, NO_ARGS_IS_HELP, command)."""
