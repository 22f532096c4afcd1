import json, copy, base64, struct, hashlib, sys, os
R = os.path.dirname(os.path.abspath(__file__))
run = sys.argv[1]  # a probe run directory (rt-guest probe --out DIR)
man_bytes = open(f"{run}/manifest.json", "rb").read()
probe_bytes = open(f"{run}/probe.json", "rb").read()
man = json.loads(man_bytes); probe = json.loads(probe_bytes)

def sec(name, body, hdr=None):
    if isinstance(body, (dict, list)):
        body = (json.dumps(body, indent=2) + "\n").encode()
    return b"=== " + (hdr or name).encode() + b"\n" + body + b"\n"

def bundle(path, *runs):
    out = b""
    for i, r in enumerate(runs):
        if i: out += b"=== @next\n"
        out += b"".join(r)
    open(f"{R}/run_record/{path}", "wb").write(out)

def fixed(m=None, p=None, extra=()):
    return [sec("manifest.json", m or man), sec("probe.json", p or probe), *extra]

# V2 (uncompressed) HdrHistogram encoding, lowest 1, highest 60 s, 3 digits, as record::hist.
def zz(v):
    v = (v << 1) ^ (v >> 63)
    out = b""
    while True:
        b = v & 0x7f; v >>= 7
        if v: out += bytes([b | 0x80])
        else: return out + bytes([b])
def idx(v):
    if v < 2048: return v
    bucket = v.bit_length() - 1 - 10
    sub = v >> bucket
    return ((bucket + 1) << 10) + (sub - 1024)
def v2(counts):  # {value_ns: count}
    items = sorted((idx(v), c) for v, c in counts.items())
    payload, pos = b"", 0
    for i, c in items:
        if i > pos: payload += zz(-(i - pos))
        payload += zz(c); pos = i + 1
    hdr = struct.pack(">IIIIQQd", 0x1c849313, len(payload), 0, 3, 1, 60_000_000_000, 1.0)
    return base64.b64encode(hdr + payload).decode()

# item 1: the same run twice
bundle("dup-manifest-one-more-newline.bundle",
       [sec("manifest.json", man_bytes, "manifest.json raw"), sec("probe.json", probe_bytes)],
       [sec("manifest.json", man_bytes + b"\n", "manifest.json raw"), sec("probe.json", probe_bytes)])
m2 = copy.deepcopy(man); m2["run_id"] += "-copy"
bundle("dup-new-run-id.bundle", fixed(), fixed(m=m2))
p = copy.deepcopy(probe); t2 = copy.deepcopy(p["threads"][0]); p["threads"].append(t2)
bundle("same-cpu-twice.bundle", fixed(p=p))
# item 1: counts that wrap u64 (4 x 2^62 = 2^64) above a 50 us bound
p = copy.deepcopy(probe); th = p["threads"][0]
th["latency"]["hdr"] = v2({60_000: 1 << 62, 61_000: 1 << 62, 62_000: 1 << 62, 63_000: 1 << 62})
th["latency"]["samples"] = 20000; th["samples"] = 20000
bundle("hist-counts-wrap-2-64.bundle", fixed(p=p))
p = copy.deepcopy(probe); t2 = copy.deepcopy(p["threads"][0]); t2["cpu"] = 2
p["threads"].append(t2)
for t in p["threads"]: t["missed_periods"] = 1 << 63
bundle("missed-periods-2-63-twice.bundle", fixed(p=p))
# item 1: the profile copy edited, its sha256 kept (raw: no fix-up)
m = copy.deepcopy(man); m["profile"]["text"] = m["profile"]["text"].replace("bound_us: Some(50)", "bound_us: Some(50000)")
assert m["profile"]["text"] != man["profile"]["text"]
bundle("profile-copy-edited.bundle", [sec("manifest.json", m, "manifest.json raw"), sec("probe.json", probe_bytes)])
m = copy.deepcopy(man); m["environment"]["guest_check"]["ok"] = False; m["environment"]["guest_check"]["met"] = True
bundle("check-ok-false-met-true.bundle", fixed(m=m))
m = copy.deepcopy(man); m["environment"]["selftest"] = {"failed": "yes", "checks": []}
bundle("selftest-failed-as-string.bundle", fixed(m=m))
m = copy.deepcopy(man); m["format"] = 999
bundle("format-999.bundle", fixed(m=m))
m = copy.deepcopy(man); m["tools"] = []
bundle("no-tool-run.bundle", fixed(m=m))
# items 1 and 4: a tool run killed (end null, not marked partial)
m = copy.deepcopy(man); m["tools"][0]["end"] = None; m["tools"][0]["partial"] = False
bundle("tool-killed-end-null.bundle", fixed(m=m))
# item 2: entries that leave the run, symlinks, hostile run ids
entry = {"sha256": "00" * 32, "bytes": 5, "written_by": "rt-guest probe"}
m = copy.deepcopy(man); m["files"]["../../etc/hostname"] = entry
bundle("entry-dot-dot.bundle", fixed(m=m))
m = copy.deepcopy(man); m["files"]["/etc/hostname"] = entry
bundle("entry-absolute.bundle", fixed(m=m))
m = copy.deepcopy(man); m["files"]["can.log"] = entry
bundle("can-log-symlink-outside.bundle", fixed(m=m, extra=[b"=== can.log -> /etc/hostname\n\n"]))
m = copy.deepcopy(man); m["run_id"] = "../../../tmp/rtvirt-report-escape"
bundle("run-id-dot-dot.bundle", fixed(m=m))
m = copy.deepcopy(man); m["run_id"] = "<script>alert(1)</script>"
m["environment"]["notes"] = ["<img src=x onerror=alert(1)>", "</td></tr></table><script>x()</script>", "\" onmouseover=\"alert(1)"]
m["environment"]["hostname"] = "<svg onload=alert(1)>"
bundle("html-hostile-strings.bundle", fixed(m=m))
# item 3: reads that never end
m = copy.deepcopy(man)
bundle("probe-symlink-dev-zero.bundle", [sec("manifest.json", m), b"=== probe.json -> /dev/zero\n\n"])
m = copy.deepcopy(man); m["files"]["can.log"] = entry
bundle("can-log-fifo.bundle", fixed(m=m, extra=[b"=== can.log |fifo\n\n"]))
# item 3: a 60-character histogram whose header claims a 4 GiB payload
hdr = struct.pack(">IIIIQQd", 0x1c849313, 0xFFFFFFF0, 0, 3, 1, 60_000_000_000, 1.0)
s = base64.b64encode(hdr + b"\x00" * 4).decode()
open(f"{R}/hist/payload-len-fffffff0.b64", "w").write(s)
print(len(s))
p = copy.deepcopy(probe); p["threads"][0]["latency"]["hdr"] = s
bundle("hist-payload-4-gib.bundle", fixed(p=p))
open(f"{R}/hist/counts-wrap-2-64.b64", "w").write(
    v2({60_000: 1 << 62, 61_000: 1 << 62, 62_000: 1 << 62, 63_000: 1 << 62}))
J = f"{R}/journal"
def journal(name, entries, complete=True):
    open(f"{J}/{name}", "w").write(json.dumps(
        {"profile": "lab", "started": "2026-12-01T10:00:00Z", "entries": entries, "complete": complete}, indent=2) + "\n")
journal("file-dot-dot.json", [{"target": {"File": {"path": "sys/../../../etc/passwd"}}, "prior": "root::0:0:root:/root:/bin/sh\n", "applied": "x"}])
journal("file-absolute.json", [{"target": {"File": {"path": "/etc/shadow"}}, "prior": "root::1::::::\n", "applied": "x"}])
journal("mkdir-root.json", [{"target": {"Mkdir": {"path": ""}}, "prior": "", "applied": ""},
                            {"target": {"Mkdir": {"path": "sys/fs/cgroup/../../../"}}, "prior": "", "applied": ""}], complete=False)
journal("cgroup-mount-outside.json", [{"target": {"CgroupThread": {"pid": 1, "tid": 1, "start_time": 0, "name": "init", "mount": "../../etc", "v2": True}}, "prior": "/../../../etc/cron.d", "applied": "/"}])
