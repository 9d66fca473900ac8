#!/usr/bin/env python3
"""Cost of erasing one customer as the store grows, next to reading one customer in the
same sitting (the ratio is what to compare across machines).

    cargo build --release --bin tandem
    python3 bench/erasure.py                      # embedded and Redis, 2,000 and 20,000 customers
    CUSTOMERS="5000" STORES="redis" python3 bench/erasure.py

For each store and size: starts `target/release/tandem serve` on a fresh store, sends one
signed message from each of CUSTOMERS distinct phones (16 at a time), waits until every
event is applied, then times 20 reads (`GET /v1/customers/{phone}`) and 20 erasures
(`DELETE /v1/customers/{phone}`) of different customers, one at a time. Needs a Redis at
REDIS_URL (default redis://127.0.0.1:6379) for the Redis runs.
"""

import concurrent.futures
import hashlib
import hmac
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.environ.get("TANDEM_BIN", os.path.join(ROOT, "target/release/tandem"))
REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379")
SECRET = b"bench-secret"
TOKEN = "bench-token"
PNID = "106540000000001"
SAMPLES = 20


def body(phone, i):
    message = {"from": phone, "id": f"wamid.erase{i}", "timestamp": str(int(time.time())),
               "type": "text", "text": {"body": f"message {i}"}}
    value = {"messaging_product": "whatsapp",
             "metadata": {"display_phone_number": "15550001111", "phone_number_id": PNID},
             "contacts": [{"profile": {"name": f"Customer {i}"}, "wa_id": phone}],
             "messages": [message]}
    return json.dumps({"object": "whatsapp_business_account",
                       "entry": [{"id": "104810000000001",
                                  "changes": [{"field": "messages", "value": value}]}]}).encode()


def request(url, method="GET", data=None, headers=None):
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def post(base, phone, i):
    data = body(phone, i)
    sig = "sha256=" + hmac.new(SECRET, data, hashlib.sha256).hexdigest()
    status, _ = request(base + "/webhook", "POST", data,
                        {"x-hub-signature-256": sig, "content-type": "application/json"})
    assert status == 200, status


def inbox_depth(base):
    _, text = request(base + "/metrics")
    found = re.search(rb"^tandem_inbox_depth (\S+)$", text, re.M)
    return float(found.group(1)) if found else 1.0


def timed(fn, items):
    out = []
    for item in items:
        start = time.perf_counter()
        fn(item)
        out.append((time.perf_counter() - start) * 1000)
    return out


def run(store, customers):
    work = tempfile.mkdtemp()
    prefix = f"tandem-bench-erase:{os.getpid()}:{customers}"
    env = dict(os.environ, TANDEM_APP_SECRET=SECRET.decode(), TANDEM_VERIFY_TOKEN="v",
               TANDEM_API_TOKEN=TOKEN, TANDEM_API_RATE_LIMIT="0", RUST_LOG="warn",
               TANDEM_REDIS_PREFIX=prefix)
    url = REDIS_URL if store == "redis" else os.path.join(work, "store.redb")
    proc = subprocess.Popen([BIN, "serve", "--listen", "127.0.0.1:0", "--store", url],
                            cwd=work, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        line = proc.stdout.readline().decode()
        base = re.search(r"listening on (http\S+)", line).group(1)
        phones = [f"3519{i:08d}" for i in range(customers)]
        with concurrent.futures.ThreadPoolExecutor(16) as pool:
            list(pool.map(lambda p: post(base, p[1], p[0]), enumerate(phones)))
        deadline = time.monotonic() + 600
        while inbox_depth(base) > 0:
            assert time.monotonic() < deadline, "the lanes did not drain within 10 minutes"
            time.sleep(0.2)
        auth = {"authorization": f"Bearer {TOKEN}"}

        def read(phone):
            status, _ = request(f"{base}/v1/customers/{phone}", headers=auth)
            assert status == 200, status

        def erase(phone):
            status, answer = request(f"{base}/v1/customers/{phone}", "DELETE", headers=auth)
            assert status == 200, (status, answer)

        step = customers // (2 * SAMPLES)
        reads = timed(read, phones[0:SAMPLES * step:step])
        erasures = timed(erase, phones[1:SAMPLES * step:step])
        r, e = statistics.median(reads), statistics.median(erasures)
        print(f"{store:8} customers={customers:6} read_p50_ms={r:8.2f} erase_p50_ms={e:8.2f} "
              f"erase_max_ms={max(erasures):8.2f} erase/read={e / r:6.1f}", flush=True)
    finally:
        proc.terminate()
        proc.wait()
        shutil.rmtree(work, ignore_errors=True)
        if store == "redis":
            subprocess.run(f"redis-cli -u {REDIS_URL} --scan --pattern '{prefix}*' | "
                           f"xargs -r -n 500 redis-cli -u {REDIS_URL} del >/dev/null",
                           shell=True, check=False)


def main():
    sizes = [int(n) for n in os.environ.get("CUSTOMERS", "2000 20000").split()]
    stores = os.environ.get("STORES", "embedded redis").split()
    for customers in sizes:
        for store in stores:
            run(store, customers)


if __name__ == "__main__":
    sys.exit(main())
