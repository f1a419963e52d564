"""Speed and real-data figures (`make bench`); scripts, never run by the tests."""
