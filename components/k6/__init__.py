"""The stack's k6 load-test runner (component.py) and the command it runs (settings.py)."""
