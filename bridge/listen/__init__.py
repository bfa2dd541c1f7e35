"""`bridge listen`: a local target that verifies each delivery and prints it (`listener.py`)."""
