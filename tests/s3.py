"""A real S3 server for the tests: moto's server mode on 127.0.0.1 (what Ray's own tests use), spoken to over the
S3 protocol by pyarrow, Ray and boto3 alike, with IAM authentication on (wrong keys are refused, as AWS would).

    python -m tests.s3        # runs one until Ctrl-C and prints the variables to export (for trying things by hand)
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

BUCKET = "cnnjobs-test"
REGION = "us-east-1"


@dataclass
class S3Server:
    """A running moto server, the bucket the tests use, and the environment that reaches it."""

    endpoint: str
    port: int
    env: dict[str, str]
    bucket: str = BUCKET
    _server: object = field(default=None, repr=False)

    def uri(self, *parts: str) -> str:
        """`s3://<bucket>/<parts...>`."""
        return "/".join([f"s3://{self.bucket}", *parts])

    def client(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, region_name=REGION,
                            aws_access_key_id=self.env["AWS_ACCESS_KEY_ID"],
                            aws_secret_access_key=self.env["AWS_SECRET_ACCESS_KEY"])

    def keys(self, prefix: str = "") -> list[str]:
        """Every object key under `prefix` in the bucket."""
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)
        return sorted(item["Key"] for page in pages for item in page.get("Contents", []))

    def stop(self) -> None:
        """Take the endpoint down (the objects are kept: moto's state lives in this process)."""
        self._server.stop()

    def start(self) -> None:
        """Bring the endpoint back on the same port."""
        from moto.server import ThreadedMotoServer

        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self._server.start()


def start_server() -> S3Server:
    """Start moto on a free port of 127.0.0.1, with a user whose keys may do anything, the test bucket, and
    authentication on from then on."""
    import logging

    import boto3
    import requests
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    setup = {"endpoint_url": endpoint, "region_name": REGION, "aws_access_key_id": "setup",
             "aws_secret_access_key": "setup"}
    iam = boto3.client("iam", **setup)
    iam.create_user(UserName="cnnjobs")
    iam.put_user_policy(UserName="cnnjobs", PolicyName="everything", PolicyDocument=json.dumps({
        "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}))
    key = iam.create_access_key(UserName="cnnjobs")["AccessKey"]
    boto3.client("s3", **setup).create_bucket(Bucket=BUCKET)
    requests.post(f"{endpoint}/moto-api/reset-auth", data=b"0", timeout=10).raise_for_status()  # keys checked now
    env = {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": key["AccessKeyId"],
           "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"], "AWS_DEFAULT_REGION": REGION, "AWS_REGION": REGION}
    return S3Server(endpoint, port, env, _server=server)


if __name__ == "__main__":
    import time

    s3 = start_server()
    print(" ".join(f"{k}={v}" for k, v in s3.env.items()), f"# bucket s3://{s3.bucket}", flush=True)
    try:
        while True:
            time.sleep(1)
    except KeyboardInterrupt:
        s3.stop()
        os._exit(0)
