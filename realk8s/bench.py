#!/usr/bin/env python3
"""Figures of a running realk8s cluster (scripts/bench-realk8s.sh runs this).

- pod created -> Ready: a Deployment of the demo app (readiness probe every
  1 s) scaled from 0; each pod from the watch event that first shows it to the
  one that first shows it Ready (local receive times of one watch).
- endpoint propagation: a ready pod is deleted, then
    deletion  = the watch event that first shows its deletionTimestamp,
    slice     = the EndpointSlice watch event that first shows its endpoint not
                ready (or gone),
    iptables  = the moment node 1's kube-proxy no longer sends the Service's
                traffic to it (its KUBE-SEP chain is no longer a target of the
                Service's KUBE-SVC chain in `iptables-save -t nat`, polled every
                few ms),
  repeated for a few dozen deletions, each after the replacement is ready.
Prints median and max of each. Uses kubectl (the machine's) and iptables-save.
"""

import argparse
import json
import re
import statistics
import subprocess
import sys
import threading
import time

NS = "realk8s-bench"
APP = "bench"
NODE_PORT = 30090


def kubectl(kc, *args, check=True, input=None):
    r = subprocess.run(["kubectl", "--kubeconfig", kc, *args], capture_output=True, text=True, input=input)
    if check and r.returncode != 0:
        sys.exit(f"kubectl {' '.join(args)} failed: {r.stderr.strip()}")
    return r.stdout


class Watch(threading.Thread):
    """`kubectl get KIND -w -o json` in the background: (receive time, event type, object)."""

    def __init__(self, kc, kind, on_event):
        super().__init__(daemon=True)
        self.proc = subprocess.Popen(
            ["kubectl", "--kubeconfig", kc, "-n", NS, "get", kind, "-w", "--output-watch-events", "-o", "json"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, bufsize=1)
        self.on_event = on_event

    def run(self):
        dec = json.JSONDecoder()
        buf = ""
        for line in self.proc.stdout:
            buf += line
            while True:
                buf = buf.lstrip()
                if not buf:
                    break
                try:
                    ev, end = dec.raw_decode(buf)
                except json.JSONDecodeError:
                    break
                buf = buf[end:]
                self.on_event(time.monotonic(), ev.get("type"), ev.get("object", {}))

    def stop(self):
        self.proc.terminate()


def manifests(replicas):
    return f"""
apiVersion: v1
kind: Namespace
metadata: {{name: {NS}}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: {APP}, namespace: {NS}}}
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{app: {APP}}}}}
  template:
    metadata: {{labels: {{app: {APP}}}}}
    spec:
      terminationGracePeriodSeconds: 2
      containers:
      - name: app
        image: rolltest-demo:v1
        args: ["--on-sigterm", "exit"]
        ports: [{{containerPort: 8080}}]
        readinessProbe:
          httpGet: {{path: /healthz, port: 8080}}
          periodSeconds: 1
---
apiVersion: v1
kind: Service
metadata: {{name: {APP}, namespace: {NS}}}
spec:
  type: NodePort
  selector: {{app: {APP}}}
  ports: [{{port: 80, targetPort: 8080, nodePort: {NODE_PORT}}}]
"""


def is_ready(pod):
    for c in pod.get("status", {}).get("conditions", []) or []:
        if c.get("type") == "Ready":
            return c.get("status") == "True"
    return False


def stats(name, xs):
    if not xs:
        return f"{name:<44} (no samples)"
    ms = [x * 1000 for x in xs]
    return f"{name:<44} median {statistics.median(ms):7.0f} ms   max {max(ms):7.0f} ms   (n={len(ms)})"


def iptables_targets():
    """The pod IPs the Service's KUBE-SVC chain sends traffic to."""
    out = subprocess.run(["iptables-save", "-t", "nat"], capture_output=True, text=True).stdout
    sep_ip = {}
    svc_targets = set()
    for line in out.splitlines():
        m = re.match(r"-A (KUBE-SEP-\w+) .*--to-destination ([\d.]+):\d+", line)
        if m:
            sep_ip[m.group(1)] = m.group(2)
            continue
        m = re.match(r"-A KUBE-SVC-\w+ .*" + re.escape(f"{NS}/{APP}") + r".* -j (KUBE-SEP-\w+)", line)
        if m:
            svc_targets.add(m.group(1))
    return {sep_ip[s] for s in svc_targets if s in sep_ip}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kubeconfig", required=True)
    ap.add_argument("--pods", type=int, default=12, help="pods created for the create->Ready figure")
    ap.add_argument("--deletions", type=int, default=30, help="pod deletions for the propagation figure")
    a = ap.parse_args()
    kc = a.kubeconfig

    lock = threading.Lock()
    seen, ready_at, deleting_at = {}, {}, {}  # pod name -> first time seen / Ready / deleting
    slice_gone = {}  # ip -> time its endpoint was first not ready/absent in the slice
    slice_ready = {}  # EndpointSlice name -> the addresses it shows ready

    def on_pod(t, typ, pod):
        name = pod.get("metadata", {}).get("name")
        with lock:
            seen.setdefault(name, t)
            if is_ready(pod) and name not in ready_at and not pod["metadata"].get("deletionTimestamp"):
                ready_at[name] = t
            if pod["metadata"].get("deletionTimestamp") and name not in deleting_at:
                deleting_at[name] = t

    def on_slice(t, typ, es):
        with lock:
            now_ready = set()
            if typ != "DELETED":
                for ep in es.get("endpoints") or []:
                    if (ep.get("conditions") or {}).get("ready"):
                        now_ready.update(ep.get("addresses") or [])
            name = es["metadata"]["name"]
            before = slice_ready.get(name, set())
            for ip in before - now_ready:
                slice_gone.setdefault(ip, t)
            slice_ready[name] = now_ready

    kubectl(kc, "delete", "namespace", NS, "--ignore-not-found", "--wait=true", "--timeout=120s", check=False)
    kubectl(kc, "apply", "-f", "-", input=manifests(0))
    pods_w = Watch(kc, "pods", on_pod)
    slices_w = Watch(kc, "endpointslices", on_slice)
    pods_w.start()
    slices_w.start()
    time.sleep(1.5)

    # -- pod created -> Ready
    kubectl(kc, "-n", NS, "scale", "deployment", APP, f"--replicas={a.pods}")
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        with lock:
            if len(ready_at) >= a.pods:
                break
        time.sleep(0.1)
    with lock:
        create_ready = [ready_at[n] - seen[n] for n in ready_at]
    # Scale to a steady set for the deletions.
    keep = 3
    kubectl(kc, "-n", NS, "scale", "deployment", APP, f"--replicas={keep}")
    time.sleep(5)

    to_slice, to_ipt, slice_to_ipt = [], [], []
    for i in range(a.deletions):
        # a ready pod that is not being deleted, with every replica ready
        deadline = time.monotonic() + 60
        victim = None
        while time.monotonic() < deadline and victim is None:
            pods = json.loads(kubectl(kc, "-n", NS, "get", "pods", "-o", "json"))["items"]
            ready = [p for p in pods if is_ready(p) and not p["metadata"].get("deletionTimestamp")]
            targets = iptables_targets() if len(ready) >= keep else set()
            if len(ready) >= keep and all(p["status"].get("podIP") in targets for p in ready):
                victim = ready[0]
            else:
                time.sleep(0.3)
        if victim is None:
            print("no steady set of ready pods; stopping", file=sys.stderr)
            break
        name, ip = victim["metadata"]["name"], victim["status"]["podIP"]
        with lock:
            # Pod addresses are reused: an earlier pod's endpoint with this
            # address may have left a slice already.
            slice_gone.pop(ip, None)
        kubectl(kc, "-n", NS, "delete", "pod", name, "--wait=false")
        t_ipt = None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if ip not in iptables_targets():
                t_ipt = time.monotonic()
                break
            time.sleep(0.005)
        time.sleep(0.3)
        with lock:
            t_del = deleting_at.get(name)
            t_sl = slice_gone.get(ip)
        if t_del is None or t_sl is None or t_ipt is None:
            print(f"deletion {i + 1}: incomplete (deletion {t_del}, slice {t_sl}, iptables {t_ipt})", file=sys.stderr)
            continue
        to_slice.append(t_sl - t_del)
        to_ipt.append(t_ipt - t_del)
        slice_to_ipt.append(t_ipt - t_sl)
        print(f"deletion {i + 1:2}: slice +{(t_sl - t_del) * 1000:5.0f} ms, iptables +{(t_ipt - t_del) * 1000:5.0f} ms", file=sys.stderr)

    pods_w.stop()
    slices_w.stop()
    kubectl(kc, "delete", "namespace", NS, "--wait=false", check=False)

    print(stats("pod created -> Ready (probe every 1 s)", create_ready))
    print(stats("pod deletion -> EndpointSlice not ready", to_slice))
    print(stats("pod deletion -> kube-proxy rule gone", to_ipt))
    print(stats("EndpointSlice change -> kube-proxy rule gone", slice_to_ipt))


if __name__ == "__main__":
    main()
