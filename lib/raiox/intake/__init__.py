"""The intake step: the webhook turns a Jotform submission (or a JSON or upload body) into a case."""
