#!/usr/bin/env python3
"""File-level import cycles inside each crate: module A names `crate::b` (or
`super::b` from a sibling) and module B names `crate::a`. Prints each cycle;
exit 1 when there is one. Test modules (`#[cfg(test)] mod ...`) count too, except
lines after `#[cfg(test)]` in the same file and a `DIR/tests.rs` that `DIR/mod.rs`
declares as `#[cfg(test)] mod tests;` (a rough cut: run it and read)."""
import os, re, sys, glob

root = sys.argv[1] if len(sys.argv) > 1 else '.'
found = 0
for crate in sorted(glob.glob(os.path.join(root, 'crates/*/src'))):
    mods = {}
    for path in glob.glob(os.path.join(crate, '**/*.rs'), recursive=True):
        rel = os.path.relpath(path, crate)[:-3]
        name = rel.replace('/mod', '').replace('/', '::')
        if name in ('lib', 'main'):
            name = ''
        text = open(path, encoding='utf-8').read()
        parent = os.path.join(os.path.dirname(path), 'mod.rs')
        if (os.path.basename(path) == 'tests.rs' and os.path.exists(parent)
                and '#[cfg(test)]\nmod tests;' in open(parent, encoding='utf-8').read()):
            continue
        cut = text.find('#[cfg(test)]\nmod tests')
        if cut >= 0:
            text = text[:cut]
        text = '\n'.join(l for l in text.split('\n') if not l.lstrip().startswith('//'))
        refs = set(re.findall(r'crate::([a-z_][a-z0-9_]*)', text))
        mods[name] = refs
    top = {n.split('::')[0] for n in mods if n}
    edges = {}
    for n, refs in mods.items():
        a = n.split('::')[0]
        for r in refs:
            if r in top and r != a:
                edges.setdefault(a, set()).add(r)
    for a in sorted(edges):
        for b in sorted(edges[a]):
            if a < b and a in edges.get(b, set()):
                print(f'{os.path.dirname(crate)}: {a} <-> {b}')
                found += 1
print(f'{found} cycle(s)')
sys.exit(1 if found else 0)
