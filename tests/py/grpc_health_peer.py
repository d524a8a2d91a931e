#!/usr/bin/env python3
"""A gRPC server with the real grpc.health.v1 servicer (PyPI `grpcio-health-checking`), for
ringway's active health check tests.

  grpc_health_peer.py
      Listens on 127.0.0.1:0, prints "PORT <n>", serves grpc.health.v1.Health with the
      overall status ("") SERVING. Each stdin line "SERVING" or "NOT_SERVING" sets the
      overall status and answers "OK"; stdin EOF (or 600 s) stops it.
"""
import sys
import threading
from concurrent import futures

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

MAX_SECONDS = 600


def main():
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4), options=[("grpc.enable_http_proxy", 0)])
    servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print(f"PORT {port}", flush=True)
    done = threading.Event()

    def commands():
        for line in sys.stdin:
            word = line.strip()
            if word in ("SERVING", "NOT_SERVING"):
                servicer.set("", getattr(health_pb2.HealthCheckResponse, word))
                print("OK", flush=True)
        done.set()

    threading.Thread(target=commands, daemon=True).start()
    done.wait(MAX_SECONDS)
    server.stop(0)


if __name__ == "__main__":
    main()
