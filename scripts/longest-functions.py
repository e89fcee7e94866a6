#!/usr/bin/env python3
# longest-functions.py — lists the longest C functions under the folders given, longest first, as
# "LINES FILE:LINE NAME" (the evidence for STYLE.md's "no function over ~80 lines without a
# comment saying why"). A function runs from its signature to the first line that starts with
# '}' at column 0. Usage: N=20 scripts/longest-functions.py harness quantizers ...  (N: rows,
# default 10)
import os
import re
import sys


def functions(path):
    lines = open(path, errors='replace').read().split('\n')
    i = 0
    while i < len(lines):
        line = lines[i]
        m = re.match(r'^(static |inline )*[A-Za-z_][\w \*]*?\b(\w+)\(', line)
        if m and not line.startswith(('typedef', '#', 'return')) and '=' not in line.split('(')[0]:
            k = i
            while k < len(lines) and not lines[k].rstrip().endswith(('{', ';')) and k - i < 6:
                k += 1
            if k < len(lines) and lines[k].rstrip().endswith('{'):
                j = k + 1
                while j < len(lines) and not lines[j].startswith('}'):
                    j += 1
                yield (j - i + 1, path, i + 1, m.group(2))
                i = j
        i += 1


def main():
    found = []
    for root in sys.argv[1:]:
        for dirpath, _, names in os.walk(root):
            for name in names:
                if name.endswith('.c'):
                    found.extend(functions(os.path.join(dirpath, name)))
    found.sort(reverse=True)
    for row in found[:int(os.environ.get('N', '10'))]:
        print('%4d %s:%d %s' % row)


if __name__ == '__main__':
    main()
