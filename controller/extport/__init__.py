"""The original PyCam external control protocol (protocol.py), its server with access control and limits (server.py), the settings and actions behind it (control.py) and a client (client.py)."""
