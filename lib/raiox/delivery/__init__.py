"""The delivery step: each decision goes back to Jotform (and a signed webhook); the sweeper."""
