"""A keep-alive HTTPS client for bench/callgrind_https.sh: N GETs of one
path on one TLS connection (Python's ssl, trusting the tests' certificate),
each response read whole by its Content-Length. Prints the body bytes."""
import socket
import ssl
import sys

port, count, path, cafile = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
ctx = ssl.create_default_context(cafile=cafile)
raw = socket.create_connection(("127.0.0.1", port))
s = ctx.wrap_socket(raw, server_hostname="localhost")
buf = b""
total = 0
request = f"GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode()
for _ in range(count):
    s.sendall(request)
    while b"\r\n\r\n" not in buf:
        buf += s.recv(65536)
    head, buf = buf.split(b"\r\n\r\n", 1)
    length = next(
        int(line.split(b":")[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length")
    )
    while len(buf) < length:
        buf += s.recv(262144)
    total += length
    buf = buf[length:]
s.close()
print(total)
