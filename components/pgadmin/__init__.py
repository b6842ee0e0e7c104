"""pgAdmin for the stack's PostgreSQL (component.py), its server list rendered from the catalog."""
