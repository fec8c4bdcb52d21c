#!/usr/bin/env python3
"""List functions of N+ lines in crates/*/src outside #[cfg(test)] modules (rough brace parser)."""
import re, sys, os, glob
N = int(sys.argv[1]) if len(sys.argv) > 1 else 100
root = sys.argv[2] if len(sys.argv) > 2 else '.'
fn_re = re.compile(r'^\s*(pub(\([^)]*\))?\s+)?(const\s+)?(async\s+)?(unsafe\s+)?(extern\s+"[^"]*"\s+)?fn\s+(\w+)')
res = []
for path in glob.glob(os.path.join(root, 'crates/*/src/**/*.rs'), recursive=True):
    if '/tests/' in path or path.endswith('/tests.rs'): continue
    lines = open(path, encoding='utf-8', errors='replace').read().split('\n')
    i = 0; test_until = -1
    # find cfg(test) mod ranges
    def block_end(start):
        depth = 0; seen = False
        for j in range(start, len(lines)):
            l = re.sub(r'"(\\.|[^"\\])*"', '""', lines[j])
            l = re.sub(r"'(\\.|[^'\\])'", "''", l)
            l = l.split('//')[0]
            for ch in l:
                if ch == '{': depth += 1; seen = True
                elif ch == '}': depth -= 1
            if seen and depth <= 0: return j
            if not seen and l.rstrip().endswith(';'): return j
        return len(lines) - 1
    while i < len(lines):
        if lines[i].strip().startswith('#[cfg(test)]'):
            j = i + 1
            while j < len(lines) and (lines[j].strip().startswith('#') or not lines[j].strip()): j += 1
            if re.match(r'\s*(pub\s+)?mod\s+\w+\s*\{', lines[j]):
                i = block_end(j) + 1; continue
        m = fn_re.match(lines[i])
        if m and i > 0 and lines[i-1].strip() == '#[cfg(test)]':
            i = block_end(i) + 1; continue
        if m:
            e = block_end(i)
            n = e - i + 1
            if n >= N: res.append((n, path.replace(root + '/', ''), i + 1, m.group(7)))
            # continue inside to catch nested? skip nested
            i = e + 1; continue
        i += 1
res.sort(reverse=True)
for r in res: print(f'{r[0]:5d} {r[1]}:{r[2]} {r[3]}')
print(len(res), 'functions >=', N)
