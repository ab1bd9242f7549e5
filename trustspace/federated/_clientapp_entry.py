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

Before the consumer's code runs, and around it, the provider's rules (`_guard`, from the
parameters the launcher wrote; docs/federated.md, "What the provider enforces"):

- the app (FAB) Flower received must hash to the one the provider approved, or nothing of it is
  installed or run;
- with differential privacy, every train reply is clipped and noised by Flower's `LocalDpMod`
  around the ClientApp, whatever the app itself does;
- with a metrics release rule, every train and evaluate reply keeps only the metrics the
  product releases (and FedAvg's ``num-examples``);
- the SM3 digest of every reply (`update_digest.py`, copied beside this script) is written to
  /work/out/update.json, which the launcher collects for the provider's delivery receipt.

These run in the ClientApp's own process, so they hold against an approved app that is buggy or
careless, not against one written to undo them: approval (the app's digest, shown to the
operator) is what stands between the provider and hostile code.
"""

import hashlib
import json
import math
import os
import sys
from typing import Any

SOCKET = "/job/sockets/runtime"
PARAMS = "/job/params.json"
UPDATE = "/work/out/update.json"
DP_DELTA = 1e-5  # LocalDpMod's delta; with it, epsilon is chosen to give the noise asked for


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


def _local_dp(dp: dict[str, float]) -> Any:
    """Flower's LocalDpMod with noise of standard deviation `noise_multiplier * clipping_norm`
    (its std is sensitivity * sqrt(2 ln(1.25 / delta)) / epsilon; sensitivity = the norm)."""
    from flwr.clientapp.mod import LocalDpMod

    norm, multiplier = float(dp["clipping_norm"]), float(dp["noise_multiplier"])
    epsilon = math.sqrt(2 * math.log(1.25 / DP_DELTA)) / multiplier
    return LocalDpMod(clipping_norm=norm, sensitivity=norm, epsilon=epsilon, delta=DP_DELTA)


def _guard(params: dict[str, Any]) -> None:
    """Check the received app against the approved FAB hash, wrap the loaded ClientApp in the
    DP mod and record each reply's digest (module docstring)."""
    from flwr.supernode.runtime import run_clientapp as runtime
    from update_digest import content_digest  # type: ignore[import-not-found]

    expected = params.get("fab_sha256")
    received: list[str] = []
    pull = runtime.pull_task_input

    def recording_pull(client: Any) -> Any:
        message, context, run, fab = pull(client)
        received.append(hashlib.sha256(fab.content).hexdigest())
        return message, context, run, fab

    dp_mod = _local_dp(params["dp"]) if params.get("dp") else None
    allowed = None if params.get("metrics") is None else frozenset(params["metrics"])
    load = runtime.get_load_client_app_fn  # type: ignore[attr-defined]

    def guarded_load(*args: Any, **kwargs: Any) -> Any:
        inner = load(*args, **kwargs)

        def loaded(*a: Any, **k: Any) -> Any:
            # Before the app's modules are imported: a refusal here becomes Flower's error
            # reply to the message, so the ServerApp sees this node fail at once.
            if expected is not None and received != [expected]:
                with open(UPDATE, "w", encoding="utf-8") as f:
                    json.dump({"refused": "app-not-approved", "fab_sha256": received}, f)
                raise RuntimeError(f"trustspace: the app received (FAB sha256 {received}) is "
                                   f"not the one the provider approved ({expected}): not run")
            app = inner(*a, **k)

            def call(message: Any, context: Any) -> Any:
                kind = message.metadata.message_type.split(".")[0]
                if dp_mod is not None and kind == "train":
                    reply = dp_mod(message, context, app)
                else:
                    reply = app(message, context)
                if allowed is not None and kind in ("train", "evaluate") \
                        and not reply.has_error():
                    for record in reply.content.metric_records.values():
                        for name in [n for n in record if n not in allowed]:
                            del record[name]
                record = {"type": message.metadata.message_type,
                          "round": message.metadata.group_id,
                          "dp": dp_mod is not None and kind == "train",
                          "error": reply.has_error(),
                          "digest": None if reply.has_error() else content_digest(reply.content)}
                with open(UPDATE, "w", encoding="utf-8") as f:
                    json.dump(record, f)
                return reply

            return call

        return loaded

    runtime.pull_task_input = recording_pull
    runtime.get_load_client_app_fn = guarded_load  # type: ignore[attr-defined]


def main() -> None:
    with open(PARAMS, encoding="utf-8") as f:
        params = json.load(f)
    os.environ.update({"FLWR_HOME": "/work/flwr", "FLWR_TELEMETRY_ENABLED": "0",
                       "FLWR_DISABLE_UPDATE_CHECK": "1"})
    _through_socket()
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    _guard(params)
    from flwr.supernode.cli.flwr_clientapp import flwr_clientapp

    sys.argv = ["flwr-clientapp", "--runtime-api-address", params["address"],
                "--token", params["token"], "--insecure"]
    flwr_clientapp()


if __name__ == "__main__":
    main()
