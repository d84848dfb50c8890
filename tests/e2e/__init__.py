"""End-to-end helpers: a moto server that can run out of EC2 capacity (moto_faults.py)."""
