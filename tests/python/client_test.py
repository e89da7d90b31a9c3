#!/usr/bin/env python3
"""A client of hyperd in another language: generates Python stubs from proto/ with
grpcio-tools, then drives a running daemon over its Unix socket: status, create, append,
get and a bad request on cores; create, a streamed write, a streamed read, readdir, stat
and a missing path on drives. Prints one JSON line with what it saw; exits non-zero on
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
    # Every file of the API: they import each other.
    api = os.path.join(args.proto_dir, "hyperd", "v1")
    protos = [os.path.join("hyperd", "v1", f) for f in sorted(os.listdir(api)) if f.endswith(".proto")]
    code = protoc.main(["grpc_tools.protoc", "-I", args.proto_dir, "--python_out", out, "--grpc_python_out", out, *protos])
    if code != 0:
        sys.exit(f"protoc failed with {code}")
    sys.path.insert(0, out)
    from hyperd.v1 import daemon_pb2, daemon_pb2_grpc, cores_pb2, cores_pb2_grpc, drives_pb2, drives_pb2_grpc

    # The default :authority for a unix: target is the socket path, which HTTP/2 servers
    # such as hyper reject; name the host plainly.
    channel = grpc.insecure_channel("unix://" + os.path.abspath(args.socket), options=[("grpc.default_authority", "localhost")])
    daemon = daemon_pb2_grpc.DaemonStub(channel)
    cores = cores_pb2_grpc.CoresStub(channel)
    drives = drives_pb2_grpc.DrivesStub(channel)

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

    # Drives: a file written as a client stream in three chunks (three content blocks),
    # read back as a server stream, listed and stat'ed.
    drive = drives.Create(drives_pb2.CreateDriveRequest(name="from-python"), timeout=10)
    assert len(drive.key) == 64 and drive.writable, drive
    body = bytes(i % 251 for i in range(150000))
    chunks = [body[i:i + 50000] for i in range(0, len(body), 50000)]
    at = lambda path: drives_pb2.Location(url="hyper://" + drive.key + path)

    def upload():
        yield drives_pb2.WriteFileRequest(start=drives_pb2.WriteFileStart(location=at("/py/data.bin")))
        for chunk in chunks:
            yield drives_pb2.WriteFileRequest(data=chunk)

    written = drives.WriteFile(upload(), timeout=10)
    assert written.stat.size == len(body) and written.stat.blocks == 3, written
    read = b"".join(r.data for r in drives.ReadFile(drives_pb2.ReadFileRequest(location=at("/py/data.bin")), timeout=10))
    assert read == body, f"read {len(read)} bytes back of {len(body)}"
    names = [e.name for page in drives.Readdir(drives_pb2.ReaddirRequest(location=at("/"), recursive=True), timeout=10) for e in page.entries]
    assert names == ["py/data.bin"], names
    stat = drives.Stat(drives_pb2.StatRequest(location=drives_pb2.Location(key=drive.key, path="py/data.bin")), timeout=10).stat
    assert stat.size == len(body) and stat.mode & 0o170000 == 0o100000, stat
    try:
        drives.Stat(drives_pb2.StatRequest(location=at("/py/missing")), timeout=10)
        sys.exit("a missing path was found")
    except grpc.RpcError as e:
        missing = e.code().name
        assert e.code() == grpc.StatusCode.NOT_FOUND, e
        assert "/py/missing" in e.details(), e.details()

    print(json.dumps({
        "ok": True,
        "version": status.version,
        "key": core.key,
        "length": info.length,
        "got": got.data.decode(),
        "badKey": bad_key,
        "drive": drive.key,
        "driveVersion": written.version,
        "readBytes": len(read),
        "names": names,
        "missing": missing,
    }))


if __name__ == "__main__":
    main()
