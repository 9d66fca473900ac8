#!/usr/bin/env python3
"""Writes N signed, unique webhook deliveries for the load test, one per line:
<X-Hub-Signature-256 value> TAB <body>. Each body holds one customer text message with its
own wamid, spread over CONVERSATIONS customers so lanes run in parallel.

Usage: gen_requests.py N SECRET OUT [CONVERSATIONS]
"""
import hashlib
import hmac
import json
import sys

def main() -> None:
    n, secret, out = int(sys.argv[1]), sys.argv[2].encode(), sys.argv[3]
    conversations = int(sys.argv[4]) if len(sys.argv) > 4 else 1000
    with open(out, "w") as f:
        for i in range(n):
            wa_id = str(15550000000 + i % conversations)
            body = json.dumps({
                "object": "whatsapp_business_account",
                "entry": [{"id": "104810000000001", "changes": [{"field": "messages", "value": {
                    "messaging_product": "whatsapp",
                    "metadata": {"display_phone_number": "15550001111", "phone_number_id": "106540000000001"},
                    "contacts": [{"profile": {"name": "Load Test"}, "wa_id": wa_id}],
                    "messages": [{"from": wa_id, "id": f"wamid.bench{i:09d}", "timestamp": "1768041000",
                                  "type": "text", "text": {"body": f"load test message {i}"}}],
                }}]}],
            }, separators=(",", ":"))
            sig = hmac.new(secret, body.encode(), hashlib.sha256).hexdigest()
            f.write(f"sha256={sig}\t{body}\n")

if __name__ == "__main__":
    main()
