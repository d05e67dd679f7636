"""The stdin/stdout protocol the TypeScript bench runner speaks with its PyTorch twins.

One JSON command per line: {"op": "quit"} ends; an op named in `queries` is answered
{"value": queries[op]()}; any other op is run n times (default 1) and answered with the mean
{"seconds": ...} per run.
"""
import json
import sys
import time


def serve_forever(ops, queries):
    for line in sys.stdin:
        cmd = json.loads(line)
        op = cmd["op"]
        if op == "quit":
            break
        if op in queries:
            reply = {"value": queries[op]()}
        else:
            n = int(cmd.get("n", 1))
            t0 = time.perf_counter()
            for _ in range(n):
                ops[op]()
            reply = {"seconds": (time.perf_counter() - t0) / n}
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()
