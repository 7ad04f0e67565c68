"""The ``celeris`` command line."""
