"""The operator surface: options and config files, the twistd service and
plugin glue, the status page and the ``blueprint-net`` command."""
