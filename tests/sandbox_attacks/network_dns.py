"""Resolve a public name (DNS) and open a UDP socket to a public resolver."""
import socket

try:
    socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b"x", ("9.9.9.9", 53))
except OSError as exc:
    print(f"udp: {type(exc).__name__}: {exc}")
socket.getaddrinfo("example.com", 443)
