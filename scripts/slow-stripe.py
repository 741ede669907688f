#!/usr/bin/env python3
"""A slow Stripe API simulator for the bulkhead benchmark (docs/benchmarks.md, issue 22).

It answers every PaymentIntent creation and read after an exact delay, as a provider in
trouble would, so a Keel node pointed at it (KEEL_PAYMENTS__STRIPE__API_BASE) fills its provider
bulkhead while `keel bench browse --provider-load N` measures the storefront meanwhile.
Loopback only. Usage: slow-stripe.py PORT DELAY_MS
"""
import itertools
import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs

PORT = int(sys.argv[1])
DELAY_S = int(sys.argv[2]) / 1000
NEXT = itertools.count(1)
LOCK = threading.Lock()


class Slow(BaseHTTPRequestHandler):
    def do_POST(self):
        length = int(self.headers.get("content-length") or 0)
        form = parse_qs(self.rfile.read(length).decode())
        if self.path != "/v1/payment_intents":
            self.answer(404, {"error": {"type": "invalid_request_error", "code": "resource_missing"}})
            return
        time.sleep(DELAY_S)
        with LOCK:
            n = next(NEXT)
        self.answer(200, {
            "id": f"pi_slow{n}", "object": "payment_intent",
            "amount": int(form.get("amount", ["0"])[0]),
            "currency": form.get("currency", ["usd"])[0],
            "status": "requires_payment_method", "amount_received": 0,
            "client_secret": f"pi_slow{n}_secret",
        })

    def do_GET(self):
        # A PaymentIntent read (Keel's retrieve of an order's open session), as slow.
        if not self.path.startswith("/v1/payment_intents/pi_slow"):
            self.answer(404, {"error": {"type": "invalid_request_error", "code": "resource_missing"}})
            return
        time.sleep(DELAY_S)
        pid = self.path.rsplit("/", 1)[1]
        self.answer(200, {
            "id": pid, "object": "payment_intent", "amount": 1, "currency": "usd",
            "status": "requires_payment_method", "amount_received": 0,
            "client_secret": f"{pid}_secret",
        })

    def answer(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


ThreadingHTTPServer.daemon_threads = True
ThreadingHTTPServer(("127.0.0.1", PORT), Slow).serve_forever()
