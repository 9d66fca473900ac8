#!/usr/bin/env python3
"""Holding many tenants: start-up time, memory and reload time of one deployment with
TENANTS tenants of 3 numbers each, next to the same server with one tenant (the baseline in
the same sitting).

    cargo build --release --bin tandem
    python3 bench/tenants.py                  # 1 and 1,000 tenants, distinct and shared flows
    TENANTS="1 100 1000" FLOWS=distinct python3 bench/tenants.py

Each tenant gets its own directory with a tandem.toml (3 numbers, a team, an agent, a hook
target, an API token) and a copy of the shipped flows: with FLOWS=distinct each copy names
its own shop address (so each tenant loads and trains its own flows, as businesses with
their own bots do); with FLOWS=shared the copies are identical (an integrator's template
bot), which tenants share. For each size: starts
`target/release/tandem serve` on a fresh embedded store, times until it prints its address,
reads its resident memory (VmRSS), then edits one tenant's flow file and times until the
reload is in force (`tandem_tenant_reloads_total{outcome="ok"}` grows), and finally times a
signed webhook to the last tenant's number until its reply reaches a Graph stand-in.
"""

import http.server
import hashlib
import hmac
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target", "release", "tandem")
SECRET = "bench-secret"
API = "bench-api"


class Graph(http.server.BaseHTTPRequestHandler):
    """Answers every send like the Cloud API and remembers the numbers written to."""

    seen = []

    def do_POST(self):  # noqa: N802
        length = int(self.headers.get("content-length", 0))
        self.rfile.read(length)
        Graph.seen.append(self.path)
        body = json.dumps({"messaging_product": "whatsapp", "messages": [{"id": "wamid.X%d" % len(Graph.seen)}]}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def write_tenants(root, count, distinct):
    flows = os.path.join(ROOT, "flows")
    for t in range(count):
        d = os.path.join(root, "t%04d" % t)
        os.makedirs(d)
        shutil.copytree(flows, os.path.join(d, "flows"), ignore=shutil.ignore_patterns("*.md"))
        if distinct:
            hours = os.path.join(d, "flows", "hours.yaml")
            with open(hours) as f:
                text = f.read().replace("Rua das Flores 12", "Street %d" % t)
            with open(hours, "w") as f:
                f.write(text)
        numbers = ", ".join('"%d"' % (200000000000000 + t * 3 + i) for i in range(3))
        with open(os.path.join(d, "tandem.toml"), "w") as f:
            f.write(
                'numbers = [%s]\n[meta]\naccess_token_env = "BENCH_TOKEN"\n'
                '[[handoff.teams]]\nid = "support"\n[[handoff.agents]]\nid = "a%d"\nteams = ["support"]\n'
                '[[hooks]]\nname = "crm"\nurl = "http://127.0.0.1:9/"\nsecret_env = "BENCH_TOKEN"\n'
                '[[api.tokens]]\nname = "desk%d"\ntoken_env = "BENCH_TOKEN"\nscopes = ["read"]\n' % (numbers, t, t)
            )


def metric(base, name):
    text = urllib.request.urlopen(base + "/metrics", timeout=10).read().decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name):
            total += float(line.rsplit(" ", 1)[1])
    return total


def rss_mib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def webhook(number, wamid):
    value = {"messaging_product": "whatsapp", "metadata": {"display_phone_number": "1", "phone_number_id": number},
             "contacts": [{"profile": {"name": "A"}, "wa_id": "15550002222"}],
             "messages": [{"from": "15550002222", "id": wamid, "timestamp": str(int(time.time())), "type": "text", "text": {"body": "opening hours"}}]}
    return json.dumps({"object": "whatsapp_business_account", "entry": [{"id": "1", "changes": [{"field": "messages", "value": value}]}]}).encode()


def run(count, distinct, graph_url):
    work = tempfile.mkdtemp()
    tenants = os.path.join(work, "tenants")
    write_tenants(tenants, count, distinct)
    env = dict(os.environ, TANDEM_TENANTS=tenants, TANDEM_STORE=os.path.join(work, "t.redb"),
               TANDEM_APP_SECRET=SECRET, TANDEM_VERIFY_TOKEN="v", TANDEM_API_TOKEN=API,
               BENCH_TOKEN="bench-token", TANDEM_GRAPH_URL=graph_url, RUST_LOG="error",
               TANDEM_API_RATE_LIMIT="0")
    started = time.monotonic()
    proc = subprocess.Popen([BIN, "serve", "--listen", "127.0.0.1:0"], env=env, cwd=work,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    base = None
    for line in proc.stdout:
        m = re.match(r"tandem listening on (\S+)", line)
        if m:
            base = m.group(1)
            break
    startup = time.monotonic() - started
    # Every tenant is built before the listener opens: memory is read once it answers.
    metric(base, "tandem_tenants")
    rss = rss_mib(proc.pid)
    # Reload: one tenant's flow file changes.
    before = metric(base, 'tandem_tenant_reloads_total{outcome="ok"')
    hours = os.path.join(tenants, "t0000", "flows", "hours.yaml")
    with open(hours, "a") as f:
        f.write("\n")
    t0 = time.monotonic()
    while metric(base, 'tandem_tenant_reloads_total{outcome="ok"') <= before:
        if time.monotonic() - t0 > 120:
            raise SystemExit("no reload within 120 s")
        time.sleep(0.05)
    reload = time.monotonic() - t0
    # One message to the last tenant's last number, until its reply is sent.
    number = str(200000000000000 + (count - 1) * 3 + 2)
    body = webhook(number, "wamid.bench%d" % count)
    sig = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    Graph.seen.clear()
    t0 = time.monotonic()
    req = urllib.request.Request(base + "/webhook", data=body, headers={"content-type": "application/json", "x-hub-signature-256": sig})
    urllib.request.urlopen(req, timeout=10).read()
    while not any(number in p for p in Graph.seen if p.endswith("/messages")):
        if time.monotonic() - t0 > 30:
            raise SystemExit("no reply within 30 s")
        time.sleep(0.005)
    reply = time.monotonic() - t0
    proc.terminate()
    proc.wait(timeout=30)
    shutil.rmtree(work)
    return startup, rss, reload, reply


def main():
    if not os.path.exists(BIN):
        sys.exit("build first: cargo build --release --bin tandem")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Graph)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    graph_url = "http://127.0.0.1:%d/v23.0" % server.server_address[1]
    sizes = [int(n) for n in os.environ.get("TENANTS", "1 1000").split()]
    modes = os.environ.get("FLOWS", "distinct shared").split()
    print("flows     tenants  numbers  start-up s  RSS MiB  reload s  first reply ms")
    for mode in modes:
        for count in sizes:
            startup, rss, reload, reply = run(count, mode == "distinct", graph_url)
            print("%-8s  %7d  %7d  %10.2f  %7.0f  %8.2f  %14.1f" % (mode, count, count * 3, startup, rss, reload, reply * 1000))


if __name__ == "__main__":
    main()
