"""The packer of the counted code (train_gpt.py section 10): the minified program means the same
as the readable one, and the packed train_gpt.py stays within its byte budget."""
import ast
import re
import subprocess
import sys
import symtable
import textwrap

import pytest

from conftest import REPO

# The counted-code ceiling: the packed train_gpt.py may not grow past this. The goal is 40,000
# bytes (the records' scripts count 32-37 kB; a byte of code is a byte the model cannot use); the
# packed copy measured 48,275 bytes when this ceiling was set (docs/records_pack.md), so the
# ceiling stops growth while the code is cut down to the goal.
CODE_BUDGET = 49_000

TRICKY = textwrap.dedent('''
    import math
    total = 10
    def f(alpha, beta=total, *rest, gamma=2, **kw):
        """docstring"""
        result: int = alpha + beta          # an annotated local
        def inner(x):
            return x + result + total       # a closure and a global
        items = [inner(i) for i in range(alpha)]
        squares = {key: key * key for key in items if key > alpha}
        try:
            math.sqrt(-1)
        except ValueError as err:
            message = f"{err} {result=}"
        return result, items, squares, message, rest, gamma, sorted(kw)
    def g(value):
        global total
        total = value
        count = 0
        for value2 in range(value):
            count += value2
        return count, (lambda value: value * 2)(count), [value for value in range(3)]
    def h(name, size):
        return name * size
    def caller():
        local_one = h(size=2, name="ab")    # passed by name: the parameters keep theirs
        return local_one, [[y for y in range(x)] for x in range(3)]
    class K:
        attr: int = 3
        def m(self, v):
            doubled = v * 2
            return doubled + self.attr
    def deco(fn):
        return fn
    @deco
    def kernel(logits: "Tensor", block: "constexpr") -> "Tensor":  # triton.jit and custom_op read this
        partial = logits * 2
        return partial + block
    import inspect
    print(f(3, 4, 5, gamma=6, z=1), g(4), total, caller(), K().m(5), kernel(1, 2), kernel.__annotations__)
    print(inspect.getsource(kernel).count("return"))  # the source of a function is found (triton.jit needs it)
''')


def run_py(src: str) -> str:
    return subprocess.run([sys.executable, "-c", src], capture_output=True, text=True, check=True).stdout


def test_minified_program_runs_the_same(tg, tmp_path):
    small = tg.minify_source(TRICKY)
    packed = tmp_path / "packed.py"
    packed.write_bytes(tg.pack_source(TRICKY))
    readable = tmp_path / "readable.py"
    readable.write_text(TRICKY)
    run = lambda path: subprocess.run([sys.executable, str(path)], capture_output=True, text=True, check=True).stdout
    assert run(packed) == run(readable) and "'block': 'constexpr'" in run(readable)
    assert "docstring" not in small and "squares" not in small and "items" not in small  # stripped, renamed
    assert "name" in small and "size" in small and "attr:int" in small  # keyword parameters, class fields stay
    assert "def kernel(logits:'Tensor',block:'constexpr')->'Tensor':" in small  # a decorated signature stays


def _functions(table: symtable.SymbolTable, skip=()):
    for child in table.get_children():
        if child.get_name() in skip:
            continue
        if child.get_type() == "function":
            yield child
        yield from _functions(child)


def test_minified_trainer_reads_the_same_globals(tg):
    """Every function of the minified trainer reads and writes exactly the module-level names
    (globals and builtins) that the readable one does, up to the renamed module functions:
    renaming never turned a local into a global or back. Scopes are matched in order (renaming
    keeps the functions and their order)."""
    src = (REPO / "train_gpt.py").read_text()
    small = tg.minify_source(src)
    top = lambda text: [n.name for n in ast.parse(text).body if isinstance(n, (ast.FunctionDef, ast.ClassDef))
                        and n.name not in tg.PACKER_DEFS]  # the packed copy leaves the packer out
    renamed = dict(zip(top(src), top(small)))
    assert len(renamed) == len(top(small)) > 150 and sum(k != v for k, v in renamed.items()) > 50
    assert "_squeeze" not in small and "PACKED_HEAD" not in small
    a = list(_functions(symtable.symtable(src, "a", "exec"), tg.PACKER_DEFS))
    b = list(_functions(symtable.symtable(small, "b", "exec")))
    assert len(a) == len(b) > 300
    for x, y in zip(a, b):
        globals_of = lambda t, m: sorted(m.get(s.get_name(), s.get_name()) for s in t.get_symbols() if s.is_global())
        assert globals_of(x, renamed) == globals_of(y, {})
        assert len(x.get_locals()) == len(y.get_locals()) and len(x.get_frees()) == len(y.get_frees())


@pytest.mark.parametrize("data", [b'"', b'""', b'"""x"', b"a\\", b"\0", b"\x001", b"\x008", b"\r\n\r", b"\\\"\"\"",
                                  bytes(range(256)), bytes(range(255, -1, -1)) * 3])
def test_latin1_literal_round_trips(tg, data):
    lit = tg.latin1_literal(data)
    assert ast.literal_eval(lit.decode("latin-1")).encode("latin-1") == data
    assert b"\r" not in lit and b"\0" not in lit


def test_packed_trainer_fits_the_budget(tg):
    src = (REPO / "train_gpt.py").read_text()
    packed = tg.pack_source(src)
    assert len(packed) <= CODE_BUDGET, f"the packed train_gpt.py is {len(packed):,} bytes, over {CODE_BUDGET:,}"
    ns = {}
    exec(packed.split(b"\nexec(")[0].decode("latin-1"), ns)  # the literal decodes to the minified source
    assert ns["PACKED_SOURCE"] == tg.minify_source(src)


def test_packed_help_says_what_it_left_out(tmp_path, tg):
    """--help of the packed copy lists every variable and its default, and says where the meanings are."""
    packed = tmp_path / "train_gpt.py"
    packed.write_bytes(tg.pack_source((REPO / "train_gpt.py").read_text()))
    out = subprocess.run([sys.executable, str(packed), "--help"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "run train_gpt_human.py --help" in out.stdout and "NUM_LAYERS" in out.stdout


def test_readable_and_packed_copies_record_the_same_source_hash(tg):
    """An artifact records source_sha256 and EVAL_ONLY refuses another one: the readable script
    hashes the text its packed copy runs (PACKED_SOURCE, the minified source), so either copy
    scores the other's artifacts."""
    import hashlib
    src = (REPO / "train_gpt.py").read_text()
    assert tg.source_sha256() == hashlib.sha256(tg.minify_source(src).encode()).hexdigest()


def test_runtime_metadata_of_the_knobs_survives(tg):
    """model_settings reads each knob's group (the artifact header's model settings): only the
    help text is dropped."""
    small = tg.minify_source((REPO / "train_gpt.py").read_text())
    assert re.search(r"num_layers:int=\w+\(11,'',lo=1,group='model'\)", small)
