"""The stack's mail relay: one Postfix that every service of the stack sends to (relay.py)."""
