"""What runs between the core and a backend: encoding, shared-prompt planning, batching, token-budget
tuning, OpenMP threads and memory."""
