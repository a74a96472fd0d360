"""What runs between the core and a backend: encoding, batching, tuning, threads and memory."""
