#!/usr/bin/env python3
"""Run every read-only command the docs show and compare its output with the docs.

A read-only command is marked in README.md and docs/*.md by a fenced block with the
`console` info string:

    ```console
    $ can-sim analyze lab              (a trailing `# exit N` expects exit code N, else 0)
    total bus load 7.34 %              (every line shown must appear in the output)
    ...                                (a line of `...` stands for lines left out)
    ```

Each command runs under bash from the repository root with the built binaries
(target/debug, or $RTVIRT_BIN_DIR) first on PATH, stdout and stderr together.
Exit 0 when every command matched; 1 with a report otherwise.
Usage: python3 lab/doc-commands.py [FILE.md ...]
"""
import glob
import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXIT = re.compile(r"\s+#\s*exit\s+(\d+)\s*$")


def blocks(path):
    """(line number, command, expected exit, expected lines) for each `$` line."""
    out, cur, in_block = [], None, False
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            line = line.rstrip("\n")
            if not in_block:
                in_block = line.strip() == "```console"
                continue
            if line.strip() == "```":
                in_block, cur = False, None
                continue
            if line.startswith("$ "):
                cmd, code = line[2:], 0
                m = EXIT.search(cmd)
                if m:
                    cmd, code = cmd[: m.start()], int(m.group(1))
                cur = (n, cmd.strip(), code, [])
                out.append(cur)
            elif cur is not None and line.strip() not in ("", "..."):
                cur[3].append(line.rstrip())
    return out


def main(files):
    files = files or [os.path.join(ROOT, "README.md")] + sorted(
        glob.glob(os.path.join(ROOT, "docs", "*.md")))
    bin_dir = os.environ.get("RTVIRT_BIN_DIR", os.path.join(ROOT, "target", "debug"))
    env = dict(os.environ, PATH=bin_dir + os.pathsep + os.environ["PATH"], TERM="dumb")
    failures, ran = [], 0
    for path in files:
        rel = os.path.relpath(path, ROOT)
        for n, cmd, code, want in blocks(path):
            ran += 1
            p = subprocess.run(["bash", "-c", cmd], cwd=ROOT, env=env, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=120)
            got = [l.rstrip() for l in p.stdout.splitlines()]
            missing = [w for w in want if w not in got]
            if p.returncode != code or missing:
                failures.append(f"{rel}:{n}: $ {cmd}\n  exit {p.returncode} (docs: {code})"
                                + "".join(f"\n  not printed: {w}" for w in missing)
                                + "\n  output:\n    " + "\n    ".join(got))
            else:
                print(f"ok   {rel}:{n}: $ {cmd}")
    if ran == 0:
        failures.append("no ```console block with a `$ ` command found")
    for f in failures:
        print(f"FAIL {f}", file=sys.stderr)
    print(f"doc-commands: {ran - len(failures)} of {ran} commands match the docs")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
