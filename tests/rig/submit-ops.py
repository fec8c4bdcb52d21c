#!/usr/bin/env python3
"""Submits Execute requests to a BuildGrid without waiting for them to run,
for tests of the executor ledger (crates/executor): each as Bazel would send
it, with the invocation id in its RequestMetadata.

usage: submit-ops.py HOST:PORT INSTANCE INVOCATION_ID COUNT SALT

Uploads COUNT distinct Actions (and their Commands and an empty input root)
to the CAS, calls Execute for each with RequestMetadata.tool_invocation_id =
INVOCATION_ID, reads the first answer (the queued operation) and hangs up.
Prints one operation name per line. Runs from the rig's BuildGrid venv."""
import hashlib
import sys

import grpc
from buildgrid._protos.build.bazel.remote.execution.v2 import remote_execution_pb2 as re
from buildgrid._protos.build.bazel.remote.execution.v2 import remote_execution_pb2_grpc as re_grpc


def digest(data):
    return re.Digest(hash=hashlib.sha256(data).hexdigest(), size_bytes=len(data))


def main():
    target, instance, invocation, count, salt = sys.argv[1:6]
    channel = grpc.insecure_channel(target)
    cas = re_grpc.ContentAddressableStorageStub(channel)
    execution = re_grpc.ExecutionStub(channel)
    root = re.Directory().SerializeToString()
    blobs = [root]
    actions = []
    for i in range(int(count)):
        command = re.Command(
            arguments=["/bin/true", salt, str(i)],
            platform=re.Platform(properties=[re.Platform.Property(name="OSFamily", value="linux")]),
        ).SerializeToString()
        action = re.Action(
            command_digest=digest(command), input_root_digest=digest(root), do_not_cache=True
        ).SerializeToString()
        blobs += [command, action]
        actions.append(action)
    cas.BatchUpdateBlobs(
        re.BatchUpdateBlobsRequest(
            instance_name=instance,
            requests=[re.BatchUpdateBlobsRequest.Request(digest=digest(b), data=b) for b in blobs],
        ),
        timeout=30,
    )
    metadata = re.RequestMetadata(
        tool_details=re.ToolDetails(tool_name="submit-ops.py"),
        tool_invocation_id=invocation,
        correlated_invocations_id="submit-ops",
    ).SerializeToString()
    for action in actions:
        call = execution.Execute(
            re.ExecuteRequest(instance_name=instance, action_digest=digest(action), skip_cache_lookup=True),
            metadata=[("build.bazel.remote.execution.v2.requestmetadata-bin", metadata)],
            timeout=30,
        )
        print(next(call).name, flush=True)
        call.cancel()


main()
