"""A Graph API stand-in for the real-server scripts: answers every send like the Cloud API
and prints each message Tandem sends, one JSON line each.

    python3 bench/graph_standin.py PORT > sent.jsonl
"""
import http.server, json, sys


class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        if body.get("type"):
            print(json.dumps(body), flush=True)
        out = json.dumps({"messaging_product": "whatsapp", "contacts": [{"input": "x", "wa_id": "x"}],
                          "messages": [{"id": "wamid.REAL%d" % id(body)}]}).encode()
        self.send_response(200); self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(out))); self.end_headers(); self.wfile.write(out)

    def log_message(self, *args):
        pass


http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
