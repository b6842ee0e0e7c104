"""The stack's k3s cluster: the server (a container on the local engine, the host's own k3s on
an SSH target), its PKI made by the program, and the workloads it runs."""
