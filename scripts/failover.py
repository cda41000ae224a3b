#!/usr/bin/env python3
"""Leader failover time of a local 3-node cluster (scripts/cluster.sh), as docs/performance.md
reports it: one client writes in a loop through the surviving nodes, the leader is killed with
kill -9, and the time from the kill to the first acknowledgement of a write sent after the kill
is recorded. The killed node is restarted and given time to catch up between trials.

    scripts/cluster.sh start /tmp/cl
    scripts/failover.py --dir /tmp/cl --trials 10

Only the Python standard library; loopback only. Exits non-zero if a trial sees no
acknowledged write within --give-up seconds.
"""

import argparse
import http.client
import json
import os
import signal
import statistics
import subprocess
import sys
import threading
import time

NODES = {f"node{n}": 8080 + n for n in (1, 2, 3)}


def request(port, method, path, body=None, timeout=1.0):
    """One HTTP request on a fresh connection; returns (status, body) or raises OSError."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def leader(ports):
    """The leader's name as any of `ports` reports it, or None."""
    for port in ports:
        try:
            status, body = request(port, "GET", "/cluster/leader", timeout=0.5)
        except OSError:
            continue
        if status == 200:
            return json.loads(body)["id"]
    return None


def wait_ready(port, seconds):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if request(port, "GET", "/ready", timeout=0.5)[0] == 200:
                return True
        except OSError:
            pass
        time.sleep(0.05)
    return False


class Writer(threading.Thread):
    """Writes one key after another through the given ports (keep-alive connections,
    switching port on any error) and records when each acknowledged write was sent and when
    its acknowledgement came."""

    def __init__(self, ports):
        super().__init__(daemon=True)
        self.ports = ports
        self.acks = []
        self.stop = threading.Event()

    def run(self):
        i = 0
        conn = None
        port_index = 0
        while not self.stop.is_set():
            port = self.ports[port_index % len(self.ports)]
            try:
                if conn is None:
                    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1.0)
                sent = time.monotonic()
                conn.request("PUT", f"/keys/failover-{i % 1000}", body=b"v" * 100)
                response = conn.getresponse()
                response.read()
                if response.status == 200:
                    self.acks.append((sent, time.monotonic()))
                    i += 1
                    continue
            except (OSError, http.client.HTTPException):
                pass
            # No acknowledgement: try the other survivor on a fresh connection.
            if conn is not None:
                conn.close()
                conn = None
            port_index += 1
            time.sleep(0.002)


def trial(directory, give_up):
    ports = list(NODES.values())
    name = leader(ports)
    if name is None:
        sys.exit("no leader is known")
    survivors = [port for node, port in NODES.items() if node != name]
    writer = Writer(survivors)
    writer.start()
    time.sleep(1.0)
    if not writer.acks:
        sys.exit("the writer got no acknowledgement before the kill")
    with open(os.path.join(directory, f"{name}.pid")) as f:
        pid = int(f.read())
    killed = time.monotonic()
    os.kill(pid, signal.SIGKILL)
    deadline = killed + give_up
    first = None
    while time.monotonic() < deadline:
        # A write sent before the kill may still be acknowledged after it (the old leader
        # committed it): only writes sent after the kill show that the cluster recovered.
        after = [acked for sent, acked in list(writer.acks) if sent > killed]
        if after:
            first = after[0]
            break
        time.sleep(0.005)
    writer.stop.set()
    writer.join()
    # Restart the killed node (cluster.sh starts only the stopped ones) and let it catch up.
    here = os.path.dirname(os.path.abspath(__file__))
    subprocess.run(
        [os.path.join(here, "cluster.sh"), "start", directory],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    if not wait_ready(NODES[name], 10):
        # Measuring on with two nodes would time a cluster that cannot lose another one.
        sys.exit(f"{name} was restarted but did not become ready within 10 s")
    time.sleep(2.0)
    return name, None if first is None else first - killed


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", default="./cluster-data", help="cluster.sh's data directory")
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--give-up", type=float, default=10.0, help="seconds per trial")
    args = parser.parse_args()
    times = []
    for n in range(1, args.trials + 1):
        name, took = trial(args.dir, args.give_up)
        if took is None:
            print(f"trial {n}: killed {name}: no acknowledged write within {args.give_up} s")
            sys.exit(1)
        times.append(took)
        print(f"trial {n}: killed {name}: first acknowledged write after {took * 1000:.0f} ms")
    times.sort()
    print(
        f"{len(times)} trials: median {statistics.median(times) * 1000:.0f} ms, "
        f"min {times[0] * 1000:.0f} ms, max {times[-1] * 1000:.0f} ms"
    )


if __name__ == "__main__":
    main()
