#!/usr/bin/env python3
"""Write a synthetic DBC matrix: N messages (extended ids), 4 signals each, cycle times.
Usage: gen_dbc.py N OUT [SCALE]: cycle times 10, 20, 50, 100, 1000 ms times SCALE
(default max(1, N // 1000)); pycpa.sh picks a SCALE that loads the bus about 70 %."""
import sys
n = int(sys.argv[1]); out = open(sys.argv[2], "w")
scale = int(sys.argv[3]) if len(sys.argv) > 3 else max(1, n // 1000)
nodes = [f"ECU{i}" for i in range(16)]
w = out.write
w('VERSION ""\n\nNS_ :\n\tBA_\n\tBA_DEF_\n\tBA_DEF_DEF_\n\nBS_:\n\n')
w("BU_: " + " ".join(nodes) + "\n\n")
for i in range(n):
    fid = 0x10000 + i
    w(f"BO_ {fid | 0x80000000} M{i}: 8 {nodes[i % 16]}\n")
    w(f' SG_ S{i}_a : 0|8@1+ (1,0) [0|255] "" {nodes[(i + 1) % 16]}\n')
    w(f' SG_ S{i}_b : 8|16@1- (0.1,-40) [-100|100] "degC" {nodes[(i + 1) % 16]}\n')
    w(f' SG_ S{i}_c : 39|12@0+ (0.5,0) [0|2000] "rpm" {nodes[(i + 2) % 16]}\n')
    w(f' SG_ S{i}_d : 48|16@1+ (1,0) [0|65535] "" {nodes[(i + 3) % 16]}\n\n')
w('BA_DEF_ BO_ "GenMsgCycleTime" INT 0 65535;\n')
w('BA_DEF_DEF_ "GenMsgCycleTime" 0;\n')
for i in range(n):
    fid = (0x10000 + i) | 0x80000000
    w(f'BA_ "GenMsgCycleTime" BO_ {fid} {[10, 20, 50, 100, 1000][i % 5] * scale};\n')
