"""Calls roomcast's TRTC API with Tencent's official Python SDK.

usage: trtc_sdk_call.py ENDPOINT SECRET_ID SECRET_KEY ACTION PARAMS_JSON [--skew SECONDS] [--get] [--raw] [--https]

Prints one JSON line: {"ok": true, "response": {...}} or
{"ok": false, "code": ..., "message": ..., "request_id": ...}.
--raw calls the action through call_json (for actions the SDK has no model for).
--https calls over HTTPS, verifying with the CA file in REQUESTS_CA_BUNDLE.
"""
import json
import sys
import time

args = sys.argv[1:]
skew = 0
if "--skew" in args:
    i = args.index("--skew")
    skew = int(args[i + 1])
    del args[i : i + 2]
method = "GET" if "--get" in args else "POST"
raw = "--raw" in args
https = "--https" in args
args = [a for a in args if a not in ("--get", "--raw", "--https")]
endpoint, secret_id, secret_key, action, params = args

if skew:
    real = time.time
    time.time = lambda: real() + skew

from tencentcloud.common import credential
from tencentcloud.common.exception.tencent_cloud_sdk_exception import TencentCloudSDKException
from tencentcloud.common.profile.client_profile import ClientProfile
from tencentcloud.common.profile.http_profile import HttpProfile
from tencentcloud.trtc.v20190722 import models, trtc_client

import os

hp = HttpProfile(
    protocol="https" if https else "http",
    endpoint=endpoint,
    reqMethod=method,
    # The SDK verifies with certifi's roots unless given a CA file.
    certification=os.environ.get("REQUESTS_CA_BUNDLE") if https else None,
)
cp = ClientProfile(signMethod="TC3-HMAC-SHA256", httpProfile=hp)
client = trtc_client.TrtcClient(credential.Credential(secret_id, secret_key), "ap-guangzhou", cp)
try:
    if raw:
        resp = client.call_json(action, json.loads(params))
        out = resp.get("Response", resp)
    else:
        req = getattr(models, action + "Request")()
        req.from_json_string(params)
        out = json.loads(getattr(client, action)(req).to_json_string())
    print(json.dumps({"ok": True, "response": out}))
except TencentCloudSDKException as e:
    print(json.dumps({"ok": False, "code": e.get_code(), "message": e.get_message(), "request_id": e.get_request_id()}))
