"""A counting TCP proxy on loopback: what clients sent through it, to measure what a resumed
upload cost against the file's size (bench/rows/resume.py and tests/test_resume.py)."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def counting_proxy(target_port: int) -> Iterator[tuple[int, list[int]]]:
    """A loopback proxy to the API: its port, and the bytes clients sent through it so far."""
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    sent = [0]
    lock = threading.Lock()
    stop = threading.Event()

    def pipe(src: socket.socket, dst: socket.socket, count: bool) -> None:
        try:
            while data := src.recv(65536):
                if count:
                    with lock:
                        sent[0] += len(data)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", target_port))
            for args in ((client, upstream, True), (upstream, client, False)):
                threading.Thread(target=pipe, args=args, daemon=True).start()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield int(listener.getsockname()[1]), sent
    finally:
        stop.set()
        thread.join()
        listener.close()
