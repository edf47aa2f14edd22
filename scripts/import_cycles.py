"""Import cycles among pollenstudio's modules, found statically with grimp (the graph
import-linter checks; imports inside functions count too).

    python scripts/import_cycles.py        # prints the cycles; exit status 1 when there is one

A cycle is a strongly connected group of two or more modules: each reaches every other
through imports. Package ``__init__`` re-exports count as imports of the package.
"""

from __future__ import annotations

import sys


def import_cycles(package: str = "pollenstudio") -> list[list[str]]:
    """Each cycle as its sorted module names (Tarjan's strongly connected components)."""
    import grimp

    graph = grimp.build_graph(package, cache_dir=None)
    modules = sorted(graph.modules)
    edges = {m: sorted(graph.find_modules_directly_imported_by(m)) for m in modules}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = 0
    for root in modules:  # iterative Tarjan: the graph may be deeper than Python's recursion limit
        if root in index:
            continue
        work = [(root, iter(edges[root]))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, it = work[-1]
            nxt = next(it, None)
            if nxt is not None:
                if nxt not in index:
                    index[nxt] = low[nxt] = counter
                    counter += 1
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(edges.get(nxt, ()))))
                elif nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                group = []
                while True:
                    m = stack.pop()
                    on_stack.discard(m)
                    group.append(m)
                    if m == node:
                        break
                if len(group) > 1:
                    out.append(sorted(group))
    return sorted(out)


def main() -> int:
    import grimp

    n = len(grimp.build_graph("pollenstudio", cache_dir=None).modules)
    cycles = import_cycles()
    print(f"grimp: {n} pollenstudio modules, {len(cycles)} import cycle(s)")
    for c in cycles:
        print("cycle: " + " <-> ".join(c))
    return 1 if cycles else 0


if __name__ == "__main__":
    sys.exit(main())
