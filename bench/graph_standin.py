"""A Graph API stand-in for the real-server scripts: answers every send like the Cloud API
and prints each message Tandem sends, one JSON line each. With MEDIA_DIR, it also serves the
files there as media, in Meta's two steps: `GET /v23.0/{id}` gives the URL of
`{MEDIA_DIR}/{id}.ogg`, which `GET /media/{id}` returns (voice notes, as `audio/ogg`).

    python3 bench/graph_standin.py PORT [MEDIA_DIR] > sent.jsonl
"""
import http.server, json, os, sys

PORT = int(sys.argv[1])
MEDIA = sys.argv[2] if len(sys.argv) > 2 else None


class H(http.server.BaseHTTPRequestHandler):
    def answer(self, status, body, kind="application/json"):
        self.send_response(status); self.send_header("content-type", kind)
        self.send_header("content-length", str(len(body))); self.end_headers(); self.wfile.write(body)

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        if body.get("type"):
            print(json.dumps(body), flush=True)
        out = json.dumps({"messaging_product": "whatsapp", "contacts": [{"input": "x", "wa_id": "x"}],
                          "messages": [{"id": "wamid.REAL%d" % id(body)}]}).encode()
        self.answer(200, out)

    def do_GET(self):
        parts = self.path.strip("/").split("/")
        path = os.path.join(MEDIA or "", parts[-1] + ".ogg")
        if not MEDIA or len(parts) != 2 or not os.path.isfile(path):
            return self.answer(404, b'{"error":{"message":"Unsupported get request","code":100}}')
        if parts[0] == "media":
            with open(path, "rb") as f:
                return self.answer(200, f.read(), "audio/ogg")
        out = {"messaging_product": "whatsapp", "id": parts[1], "mime_type": "audio/ogg; codecs=opus",
               "file_size": os.path.getsize(path), "url": "http://127.0.0.1:%d/media/%s" % (PORT, parts[1])}
        self.answer(200, json.dumps(out).encode())

    def log_message(self, *args):
        pass


http.server.HTTPServer(("127.0.0.1", PORT), H).serve_forever()
