"""Read /etc/passwd and return it as a file output."""
from trustspace.sandbox import api

with open("/etc/passwd", "rb") as f:
    api.file("passwd", f.read())
