"""The demo behind ``calmq demo``: a busy SaaS platform's background jobs, end to end."""
