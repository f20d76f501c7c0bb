"""The package layout is the architecture: each layer imports only from the layers below it."""

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "seal"
# lowest first; a module may import from its own layer and those before it
LAYERS = [
    ["core"],                      # model, generation, inner loop, store, run records, runtime
    ["domains"],                   # the Domain contract; knowledge (SQuAD), arc, toy
    ["guard"],                     # anchors, general questions, canary, the forgetting guard
    ["learn", "export"],           # seal learn on a store; writing the head out
    ["api"],                       # the Python API
    ["serve", "rl", "bench"],      # the server, the outer loop (ReST-EM), the benchmarks
    ["cli"],                       # the command line
]
RANK = {name: i for i, names in enumerate(LAYERS) for name in names}


def top_part(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if parts[0] == "seal" and len(parts) > 1 else None


def imports(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
        elif isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
    return out


def test_no_layer_imports_one_above_it():
    wrong = []
    for path in SRC.rglob("*.py"):
        rel = path.relative_to(SRC)
        if len(rel.parts) == 1 and rel.stem == "__init__":
            continue  # seal/__init__ re-exports the API lazily
        own = RANK[rel.parts[0] if len(rel.parts) > 1 else rel.stem]
        for module in imports(path):
            part = top_part(module)
            if part is not None and part in RANK and RANK[part] > own:
                wrong.append(f"{rel} imports {module}")
    assert not wrong, "\n".join(sorted(wrong))


def test_every_module_belongs_to_a_layer_and_uses_absolute_imports():
    for path in SRC.rglob("*.py"):
        rel = path.relative_to(SRC)
        if len(rel.parts) == 1 and rel.stem == "__init__":
            continue
        assert (rel.parts[0] if len(rel.parts) > 1 else rel.stem) in RANK, f"{rel}: add it to a layer"
        relative = [n for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, ast.ImportFrom) and n.level]
        assert not relative, f"{rel}: use absolute seal.* imports"


# Where weights may change in place: the adapter arithmetic itself, the transformers backend (it
# applies the adapters a call names), the inner loop (a new adapter trains through a chain) and
# `seal export --format merged`. Everything else names its adapters to the backend.
IN_PLACE = {"applied_adapters", "_iter_deltas"}
IN_PLACE_ALLOWED = {"core/adapters.py", "core/generation.py", "core/inner_loop.py", "export.py"}
TENSOR_IN_PLACE = {"add_", "sub_", "mul_", "div_", "copy_", "zero_", "fill_", "set_"}


def test_weights_change_in_place_only_in_the_backend_the_inner_loop_and_export():
    wrong = []
    for path in SRC.rglob("*.py"):
        rel = str(path.relative_to(SRC))
        for node in ast.walk(ast.parse(path.read_text())):
            names = ({a.name for a in node.names} if isinstance(node, ast.ImportFrom)
                     else {node.id} if isinstance(node, ast.Name) else {node.attr} if isinstance(node, ast.Attribute) else set())
            if names & IN_PLACE and rel not in IN_PLACE_ALLOWED:
                wrong.append(f"{rel}:{node.lineno} uses {', '.join(sorted(names & IN_PLACE))}")
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in TENSOR_IN_PLACE
                    and rel != "core/adapters.py"):
                wrong.append(f"{rel}:{node.lineno} calls .{node.func.attr}(): tensors change in place in core/adapters.py only")
    assert not wrong, "\n".join(sorted(wrong))
