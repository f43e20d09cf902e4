"""Lab helpers for pushing to the lab registry (plain HTTP on the docker0 address).

    registry_relay.py trusts HOST:PORT   < `docker info --format '{{json .RegistryConfig}}'`
        exit 0 when that dockerd treats HOST:PORT as an insecure (plain HTTP) registry.
    registry_relay.py relay HOST PORT LOCAL_PORT
        relay 127.0.0.1:LOCAL_PORT to HOST:PORT (loopback registries are plain HTTP by default,
        so a dockerd the lab did not start can push through it); prints "ready", runs until
        its stdin closes.
"""

from __future__ import annotations

import ipaddress
import json
import socket
import sys
import threading


def trusts(registry_config: dict, registry: str) -> bool:
    index = (registry_config.get("IndexConfigs") or {}).get(registry)
    if index is not None:
        return not index.get("Secure", True)
    address = ipaddress.ip_address(registry.rsplit(":", 1)[0])
    networks = [ipaddress.ip_network(c, strict=False) for c in registry_config.get("InsecureRegistryCIDRs") or []]
    return any(address in network for network in networks)


def _pipe(src: socket.socket, dst: socket.socket) -> None:
    try:
        while data := src.recv(65536):
            dst.sendall(data)
    except OSError:
        pass
    for sock in (src, dst):
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


def relay(host: str, port: int, local_port: int) -> None:
    server = socket.create_server(("127.0.0.1", local_port))

    def serve() -> None:
        while True:
            client, _address = server.accept()
            upstream = socket.create_connection((host, port))
            threading.Thread(target=_pipe, args=(client, upstream), daemon=True).start()
            threading.Thread(target=_pipe, args=(upstream, client), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    print("ready", flush=True)
    sys.stdin.read()


def main(argv: list[str]) -> int:
    if len(argv) == 2 and argv[0] == "trusts":
        return 0 if trusts(json.load(sys.stdin), argv[1]) else 1
    if len(argv) == 4 and argv[0] == "relay":
        relay(argv[1], int(argv[2]), int(argv[3]))
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
