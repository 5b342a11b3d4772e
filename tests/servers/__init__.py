"""Real servers on 127.0.0.1 for the tests, one pytest plugin module each (loaded by conftest)."""
