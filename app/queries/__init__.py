"""The read side: every answer of the query API and the CLI, as plain dicts.

HTTP handlers and CLI commands both call these functions, so `--json` prints
exactly what the HTTP route answers.
"""
