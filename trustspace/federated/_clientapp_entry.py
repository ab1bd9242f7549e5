"""The entry script of a sandboxed ClientApp: runs INSIDE the bubblewrap sandbox (as
/job/code/clientapp.py), started by the sandbox's boot script after it dropped to the job's uid
and set the resource limits. `clientapp_sandbox.launch` writes it there; it imports nothing
of trustspace (the sandbox has only the job API of it).

Flower's `flwr-clientapp` talks to its SuperNode's runtime API over HTTP and accepts only a
TCP address; the sandbox has no TCP at all (its own empty network namespace, and a seccomp
filter that refuses every socket but AF_UNIX). So this script points Flower's runtime HTTP
client (`flwr.supercore.protobuf.client.ProtobufClient`, an `httpx.Client`) at the one Unix
socket bound into the sandbox, which the launcher outside relays to the SuperNode's runtime
port, and then runs flwr-clientapp's own `main` with the token it was given. The address
stays in the URL (Flower checks it, and it is the Host header); every request goes to the
socket whatever its URL.
"""

import json
import os
import sys

SOCKET = "/job/sockets/runtime"
PARAMS = "/job/params.json"


def _through_socket() -> None:
    import httpx
    from flwr.supercore.protobuf import client

    original = client.ProtobufClient.__init__

    def init(self: client.ProtobufClient, base_url: str, **kwargs: object) -> None:
        original(self, base_url, **kwargs)  # type: ignore[arg-type]
        self._client.close()
        timeout = kwargs.get("timeout", 30.0)
        self._client = httpx.Client(transport=httpx.HTTPTransport(uds=SOCKET),
                                    timeout=timeout,  # type: ignore[arg-type]
                                    follow_redirects=True)

    client.ProtobufClient.__init__ = init  # type: ignore[method-assign]


def main() -> None:
    with open(PARAMS, encoding="utf-8") as f:
        params = json.load(f)
    os.environ.update({"FLWR_HOME": "/work/flwr", "FLWR_TELEMETRY_ENABLED": "0",
                       "FLWR_DISABLE_UPDATE_CHECK": "1"})
    _through_socket()
    from flwr.supernode.cli.flwr_clientapp import flwr_clientapp

    sys.argv = ["flwr-clientapp", "--runtime-api-address", params["address"],
                "--token", params["token"], "--insecure"]
    flwr_clientapp()


if __name__ == "__main__":
    main()
