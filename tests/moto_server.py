"""Starts moto's server with each request handled atomically, as DynamoDB applies each write,
and with CloudWatch answering the Smithy RPC v2 CBOR protocol the AWS SDK for Rust speaks.

moto's threaded server evaluates a condition expression and then writes the item in two steps,
with no lock between them, so two concurrent conditional PutItems on one key can both succeed
under load. DynamoDB never allows that, and Keel's idempotency and concurrency guards rely on it.
Serializing the handling of requests (connections stay concurrent) keeps moto faithful.

CloudWatch takes the awsQuery, awsJson 1.0 and RPC v2 CBOR protocols; moto serves the first two
only, and aws-sdk-cloudwatch sends RPC v2 CBOR (`POST /service/<service>/operation/<operation>`,
`smithy-protocol: rpc-v2-cbor`). Such a request is decoded and handed to moto as the same
operation in awsJson 1.0, and moto's answer is encoded back to CBOR following the operation's
output shape in botocore's model (timestamps as tag 1, blobs as byte strings). The CBOR codec
is botocore's own, the one its RPC v2 CBOR client uses. Other requests go to moto unchanged.

Usage: python moto_server.py -H 127.0.0.1 -p PORT   (the arguments of moto_server)
"""

import base64
import datetime
import functools
import io
import json
import re
import sys
import threading

import botocore.session
from botocore.parsers import RpcV2CBORParser
from botocore.serialize import RpcV2CBORSerializer
from moto import server

_lock = threading.Lock()
_dispatch = server.DomainDispatcherApplication.__call__

# The RPC v2 request path, and the services moto is asked for in RPC v2 CBOR, by the Smithy
# service name in that path (the awsJson target prefix in botocore's model).
_RPC_V2_PATH = re.compile(r"^/service/(?P<service>[^/]+)/operation/(?P<operation>[^/]+)$")
_RPC_V2_SERVICES = {"GraniteServiceVersion20100801": "cloudwatch"}


@functools.cache
def _service_model(name):
    return botocore.session.get_session().get_service_model(name)


def _to_json(value):
    """A decoded CBOR value as awsJson carries it: epoch seconds, base64 blobs."""
    if isinstance(value, dict):
        return {key: _to_json(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_to_json(item) for item in value]
    if isinstance(value, datetime.datetime):
        return value.timestamp()
    if isinstance(value, (bytes, bytearray)):
        return base64.b64encode(value).decode("ascii")
    return value


def _from_json(value, shape):
    """An awsJson value of `shape` as the CBOR serializer takes it (members outside the model
    dropped, blobs decoded)."""
    if value is None:
        return None
    kind = shape.type_name
    if kind == "structure":
        return {
            name: _from_json(item, shape.members[name])
            for name, item in value.items()
            if name in shape.members and item is not None
        }
    if kind == "list":
        return [_from_json(item, shape.member) for item in value]
    if kind == "map":
        return {key: _from_json(item, shape.value) for key, item in value.items()}
    if kind == "blob":
        return base64.b64decode(value)
    if kind in ("double", "float"):
        return float(value)
    return value


def _cbor_text_map(fields):
    """A CBOR map of text strings (an RPC v2 error body)."""
    serializer = RpcV2CBORSerializer()
    out = bytearray()
    additional_info, size = serializer._get_additional_info_and_num_bytes(len(fields))
    out += serializer._get_initial_byte(serializer.MAP_MAJOR_TYPE, additional_info)
    if size:
        out += len(fields).to_bytes(size, "big")
    for key, value in fields.items():
        serializer._serialize_type_string(out, key, None, None)
        serializer._serialize_type_string(out, str(value), None, None)
    return bytes(out)


def _rpc_v2_cbor(app, environ, start_response, service, operation):
    model = _service_model(_RPC_V2_SERVICES[service])
    cbor_headers = [("Content-Type", "application/cbor"), ("smithy-protocol", "rpc-v2-cbor")]
    if operation not in model.operation_names:
        body = _cbor_text_map({"__type": "UnknownOperationException", "message": operation})
        start_response("404 Not Found", cbor_headers + [("Content-Length", str(len(body)))])
        return [body]
    operation_model = model.operation_model(operation)
    length = int(environ.get("CONTENT_LENGTH") or 0)
    request = environ["wsgi.input"].read(length) if length else b""
    params = RpcV2CBORParser()._initial_body_parse(request) if request else {}
    payload = json.dumps(_to_json(params or {})).encode()

    inner = dict(environ)
    inner.pop("HTTP_SMITHY_PROTOCOL", None)
    inner.update(
        {
            "PATH_INFO": "/",
            "CONTENT_TYPE": "application/x-amz-json-1.0",
            "CONTENT_LENGTH": str(len(payload)),
            "HTTP_ACCEPT": "application/json",
            "HTTP_X_AMZ_TARGET": f"{model.metadata['targetPrefix']}.{operation}",
            "wsgi.input": io.BytesIO(payload),
        }
    )
    answered = {}

    def capture(status, headers, exc_info=None):
        answered["status"], answered["headers"] = status, headers
        return lambda data: None

    raw = b"".join(_dispatch(app, inner, capture))
    status = answered["status"]
    answer = json.loads(raw) if raw.strip() else {}
    if status.startswith("2"):
        shape = operation_model.output_shape
        body = bytearray()
        if shape is not None:
            RpcV2CBORSerializer()._serialize_data_item(body, _from_json(answer, shape), shape)
        body = bytes(body)
    else:
        fields = {"__type": answer.get("__type", status.split(" ", 1)[-1])}
        message = answer.get("message", answer.get("Message"))
        if message is not None:
            fields["message"] = message
        body = _cbor_text_map(fields)
    headers = [
        (name, value)
        for name, value in answered["headers"]
        if name.lower() not in ("content-type", "content-length")
    ]
    start_response(status, headers + cbor_headers + [("Content-Length", str(len(body)))])
    return [body]


def _atomic(self, environ, start_response):
    with _lock:
        rpc_v2 = _RPC_V2_PATH.match(environ.get("PATH_INFO", ""))
        if (
            rpc_v2
            and environ.get("HTTP_SMITHY_PROTOCOL") == "rpc-v2-cbor"
            and rpc_v2["service"] in _RPC_V2_SERVICES
        ):
            return _rpc_v2_cbor(self, environ, start_response, rpc_v2["service"], rpc_v2["operation"])
        return list(_dispatch(self, environ, start_response))


server.DomainDispatcherApplication.__call__ = _atomic

if __name__ == "__main__":
    sys.exit(server.main())
