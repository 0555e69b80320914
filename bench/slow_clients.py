#!/usr/bin/env python3
"""Abusive clients for bench/serve_soak.sh (standard library only): for SECONDS, in THREADS
threads, each client in turn
  - sends its headers one byte every 200 ms (slowloris) until the server closes it,
  - announces a 1000-byte body, sends 10 bytes and hangs up,
  - connects and closes at once,
  - sends a valid search and closes before reading the answer.
Prints one line: how many of each ran and how many slowloris clients the server cut off."""
import socket, sys, threading, time

host, port = sys.argv[1].rsplit(":", 1)
seconds, threads = float(sys.argv[2]), int(sys.argv[3]) if len(sys.argv) > 3 else 4
stop = time.time() + seconds
counts = {"slowloris": 0, "cut_off": 0, "half_body": 0, "connect_close": 0, "no_read": 0}
lock = threading.Lock()

def count(key):
    with lock:
        counts[key] += 1

def connect():
    return socket.create_connection((host, int(port)), timeout=30)

def slowloris():
    with connect() as s:
        s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        count("slowloris")
        while time.time() < stop:
            try:
                s.sendall(b"a")
                s.settimeout(0.2)
                if s.recv(1) == b"":
                    count("cut_off")
                    return
            except socket.timeout:
                continue
            except OSError:
                count("cut_off")
                return

def half_body():
    with connect() as s:
        s.sendall(b"POST /search HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Content-Length: 1000\r\n\r\n{\"id\": 1,")
    count("half_body")

def connect_close():
    connect().close()
    count("connect_close")

def no_read():
    body = b'{"id": 1, "direction": "text_to_image", "k": 10}'
    with connect() as s:
        s.sendall(b"POST /search HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
    count("no_read")

def client():
    kinds = [slowloris, half_body, connect_close, no_read]
    i = 0
    while time.time() < stop:
        try:
            kinds[i % len(kinds)]()
        except OSError:
            pass
        i += 1

workers = [threading.Thread(target=client) for _ in range(threads)]
for w in workers:
    w.start()
for w in workers:
    w.join()
print("ABUSE " + " ".join(f"{k}={v}" for k, v in counts.items()))
