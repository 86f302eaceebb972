#!/usr/bin/env python3
"""A coverwatch caller in Python: link an insurance account, list links, follow events.

The stubs are generated from the contract in `proto/`, not kept in the repository. From the
repository's root:

    python3 -m venv .venv
    .venv/bin/pip install -r tests/clients/python/requirements.txt
    .venv/bin/python -m grpc_tools.protoc -I proto --python_out=gen --grpc_python_out=gen \\
        proto/coverwatch/v1/*.proto
    export PYTHONPATH=gen COVERWATCH_API_KEY=<your tenant's API key>
    .venv/bin/python tests/clients/python/coverwatch_example.py start --provider axle --user-id u-1
    .venv/bin/python tests/clients/python/coverwatch_example.py list --user-id u-1
    .venv/bin/python tests/clients/python/coverwatch_example.py watch --consumer billing-sync

Every command prints one JSON object per line. `watch` follows the tenant's events as the named
consumer: it starts after the last event that consumer acknowledged (on any replica, after any
restart) and acknowledges each event once it has printed it, so a stopped and restarted `watch`
neither repeats nor skips an event.
"""

import argparse
import json
import os
import sys

import grpc
from google.protobuf.json_format import MessageToDict

from coverwatch.v1 import events_pb2, link_pb2, monitoring_pb2, monitoring_pb2_grpc

PROVIDERS = {"axle": link_pb2.PROVIDER_AXLE, "canopy": link_pb2.PROVIDER_CANOPY}


def emit(**fields):
    # One JSON object per line, flushed: a script (or a test) reading stdout sees each line as
    # soon as it is printed.
    print(json.dumps(fields), flush=True)


def start(stub, auth, args):
    response = stub.StartLink(
        monitoring_pb2.StartLinkRequest(
            provider=PROVIDERS[args.provider], user_id=args.user_id
        ),
        metadata=auth,
    )
    emit(
        link_id=response.link.id,
        state=link_pb2.LinkState.Name(response.link.state),
        session_url=response.session_url,
    )


def list_links(stub, auth, args):
    request = monitoring_pb2.ListLinksRequest(page_size=args.page_size)
    if args.user_id:
        request.user_id = args.user_id
    # Every list RPC pages the same way: page_token in, next_page_token out, empty at the end.
    while True:
        page = stub.ListLinks(request, metadata=auth)
        for link in page.links:
            emit(
                link_id=link.id,
                user_id=link.user_id,
                provider=link_pb2.Provider.Name(link.provider),
                state=link_pb2.LinkState.Name(link.state),
            )
        if not page.next_page_token:
            return
        request.page_token = page.next_page_token


def watch(stub, auth, args):
    # With `consumer` set (and after_cursor left 0) the server resumes after the cursor this
    # consumer last acknowledged, or from the beginning for a new consumer.
    stream = stub.WatchEvents(
        monitoring_pb2.WatchEventsRequest(consumer=args.consumer), metadata=auth
    )
    seen = 0
    try:
        for event in stream:
            payload = event.WhichOneof("payload")
            emit(
                cursor=event.cursor,
                id=event.id,
                kind=events_pb2.EventKind.Name(event.kind),
                link_id=event.link_id,
                user_id=event.user_id,
                payload=MessageToDict(getattr(event, payload)) if payload else None,
            )
            # Acknowledge only once the event is handled (here: printed). A crash between the
            # two repeats this one event on restart; deduplicate on event.id if that matters.
            stub.AckEvents(
                monitoring_pb2.AckEventsRequest(
                    consumer=args.consumer, cursor=event.cursor
                ),
                metadata=auth,
            )
            seen += 1
            if args.count and seen >= args.count:
                break
            if args.until_kind and event.kind == events_pb2.EventKind.Value(
                args.until_kind
            ):
                break
    finally:
        stream.cancel()


def services(channel, _args):
    # grpcio-reflection's descriptor database speaks reflection v1alpha, which coverwatch
    # serves beside v1.
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
        ProtoReflectionDescriptorDatabase,
    )

    for name in sorted(ProtoReflectionDescriptorDatabase(channel).get_services()):
        emit(service=name)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--addr",
        default=os.environ.get("COVERWATCH_ADDR", "localhost:50051"),
        help="coverwatch's gRPC address (default: $COVERWATCH_ADDR or localhost:50051)",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("start", help="StartLink: open a session for an end-user")
    p.add_argument("--provider", choices=sorted(PROVIDERS), required=True)
    p.add_argument("--user-id", required=True)
    p = commands.add_parser("list", help="ListLinks, every page")
    p.add_argument("--user-id")
    p.add_argument("--page-size", type=int, default=50)
    p = commands.add_parser("watch", help="WatchEvents as a named consumer, acknowledging")
    p.add_argument("--consumer", required=True)
    p.add_argument("--count", type=int, help="stop after this many events")
    p.add_argument("--until-kind", help="stop after the first event of this kind")
    commands.add_parser("services", help="list the services, by reflection (v1alpha)")
    args = parser.parse_args()

    # The API key comes from the environment, not the command line, so that it does not show
    # in process listings.
    key = os.environ.get("COVERWATCH_API_KEY")
    if not key and args.command != "services":
        sys.exit("COVERWATCH_API_KEY is not set")
    auth = (("authorization", f"Bearer {key}"),)

    with grpc.insecure_channel(args.addr) as channel:
        try:
            if args.command == "services":
                services(channel, args)
                return
            stub = monitoring_pb2_grpc.MonitoringServiceStub(channel)
            {"start": start, "list": list_links, "watch": watch}[args.command](
                stub, auth, args
            )
        except grpc.RpcError as error:
            # The status message starts with the offending field's path, e.g. `user_id: ...`.
            sys.exit(f"{error.code().name}: {error.details()}")


if __name__ == "__main__":
    main()
