#!/usr/bin/env python3
"""A client of hyperd in another language: generates Python stubs from proto/ with
grpcio-tools, then drives a running daemon over its Unix socket through status, create,
append, get and a bad request. Prints one JSON line with what it saw; exits non-zero on
any mismatch.

usage: client_test.py --socket PATH --proto-dir DIR
"""
import argparse
import json
import os
import sys
import tempfile


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--socket", required=True)
    parser.add_argument("--proto-dir", required=True)
    args = parser.parse_args()

    from grpc_tools import protoc
    import grpc

    out = tempfile.mkdtemp(prefix="hyperd-py-")
    protos = [os.path.join("hyperd", "v1", f) for f in ("daemon.proto", "cores.proto", "peers.proto")]
    code = protoc.main(["grpc_tools.protoc", "-I", args.proto_dir, "--python_out", out, "--grpc_python_out", out, *protos])
    if code != 0:
        sys.exit(f"protoc failed with {code}")
    sys.path.insert(0, out)
    from hyperd.v1 import daemon_pb2, daemon_pb2_grpc, cores_pb2, cores_pb2_grpc

    # The default :authority for a unix: target is the socket path, which HTTP/2 servers
    # such as hyper reject; name the host plainly.
    channel = grpc.insecure_channel("unix://" + os.path.abspath(args.socket), options=[("grpc.default_authority", "localhost")])
    daemon = daemon_pb2_grpc.DaemonStub(channel)
    cores = cores_pb2_grpc.CoresStub(channel)

    status = daemon.Status(daemon_pb2.StatusRequest(), timeout=10)
    assert status.api_version == "hyperd.v1", status

    core = cores.Create(cores_pb2.CreateRequest(name="from-python"), timeout=10)
    assert len(core.key) == 64 and core.writable, core
    appended = cores.Append(cores_pb2.AppendRequest(key=core.key, blocks=[b"hello", b"from", b"python"]), timeout=10)
    assert appended.length == 3 and appended.first_index == 0, appended
    got = cores.Get(cores_pb2.GetRequest(key="hyper://" + core.key, index=2), timeout=10)
    assert got.data == b"python", got
    info = cores.Info(cores_pb2.InfoRequest(key=core.key), timeout=10)
    assert info.length == 3 and info.byte_length == 15 and info.name == "from-python", info

    try:
        cores.Get(cores_pb2.GetRequest(key="not-a-key", index=0), timeout=10)
        sys.exit("a malformed key was accepted")
    except grpc.RpcError as e:
        bad_key = e.code().name
        assert e.code() == grpc.StatusCode.INVALID_ARGUMENT, e
        assert "not-a-key" in e.details(), e.details()

    print(json.dumps({
        "ok": True,
        "version": status.version,
        "key": core.key,
        "length": info.length,
        "got": got.data.decode(),
        "badKey": bad_key,
    }))


if __name__ == "__main__":
    main()
