"""A small S3 client (boto3, installed with moto) for the upload tests.

usage: s3.py ENDPOINT create BUCKET
       s3.py ENDPOINT list BUCKET PREFIX        -> JSON {key: size}
       s3.py ENDPOINT get BUCKET KEY OUT_FILE
Credentials: the fixed test pair (moto accepts any).
"""
import json
import sys

import boto3
from botocore.config import Config

endpoint, cmd, bucket = sys.argv[1:4]
s3 = boto3.client(
    "s3",
    endpoint_url=endpoint,
    region_name="us-east-1",
    aws_access_key_id="AKIDTESTS3",
    aws_secret_access_key="s3-secret-key",
    config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}),
)
if cmd == "create":
    s3.create_bucket(Bucket=bucket)
elif cmd == "list":
    keys = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=sys.argv[4]):
        for o in page.get("Contents", []):
            keys[o["Key"]] = o["Size"]
    print(json.dumps(keys))
elif cmd == "get":
    s3.download_file(bucket, sys.argv[4], sys.argv[5])
else:
    sys.exit(f"unknown command {cmd}")
