"""A loopback TCP proxy that cuts storage off mid-upload: after N blob PUTs it drops every
connection and stops listening, as if the storage endpoint died."""
from __future__ import annotations

import socket
import threading


class CuttingProxy:
    def __init__(self, upstream_port: int, cut_after_puts: int):
        self.upstream_port = upstream_port
        self.cut_after_puts = cut_after_puts
        self.puts_forwarded = 0
        self.cut = threading.Event()
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def endpoint(self, account: str = "devstoreaccount1") -> str:
        return f"http://127.0.0.1:{self.port}/{account}"

    def _accept(self) -> None:
        while not self.cut.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            with self._lock:
                self._sockets += [client, upstream]
            threading.Thread(target=self._pump, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, from_client: bool) -> None:
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                if from_client and data.startswith(b"PUT /"):
                    with self._lock:
                        if self.puts_forwarded >= self.cut_after_puts:
                            self._cut_off()
                            return
                        self.puts_forwarded += 1
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for s in (source, sink):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def _cut_off(self) -> None:
        self.cut.set()
        self._listener.close()
        for s in self._sockets:
            try:
                s.close()
            except OSError:
                pass

    def close(self) -> None:
        with self._lock:
            self._cut_off()
