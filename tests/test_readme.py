"""The figures README.md quotes about the code are the code's: defaults, the parameter count,
the dry run's output for the defaults, the step-time reference. Change the code and this test
says which sentence of the README to update."""
import dataclasses
import re

import pytest
import torch

from conftest import REPO, SAMPLE

README = (REPO / "README.md").read_text(encoding="utf-8")


def knob_table() -> dict[str, str]:
    """The README's knob table: variable -> the default cell (backticks stripped)."""
    head = README.index("| variable | default | meaning |")
    rows = {}
    for line in README[head:].splitlines()[2:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip("|").split("|")]
        rows[cells[0].strip("`")] = cells[1].strip("`")
    return rows


def test_knob_table_defaults_are_the_configs(tg):
    fields = {tg.Config.env_name(f): f for f in dataclasses.fields(tg.Config)}
    rows = knob_table()
    assert len(rows) == 10  # the ten most-changed knobs; `--help` has them all
    for name, cell in rows.items():
        assert name in fields, f"README knob table lists {name}, which Config does not have"
        default = fields[name].default
        if isinstance(default, bool):
            assert cell == str(int(default)), name
        elif isinstance(default, (int, float)):
            assert float(cell.replace(",", "")) == default, name
        else:
            assert cell == (default or "(empty)"), name


def default_meta_model(tg):
    cfg = tg.Config.from_env({})
    with torch.device("meta"):
        return cfg, tg.GPT(cfg, max_len=cfg.train_seq_len)


def test_parameter_count_and_model_params_line(tg):
    cfg, model = default_meta_model(tg)
    n = tg.count_params(model)
    assert f"a {n:,}-parameter model" in README
    line = f"model_params:{n} " + " ".join(
        f"{r}:{sum(p.numel() for _, p in ps)}" for r, ps in tg.params_by_role(model).items() if ps)
    assert README.count(line) >= 1, line  # the log excerpt's model_params line is the real one


def test_dry_run_excerpt_and_projection_for_the_defaults(tg, capsys):
    """The quoted dry run is the defaults': its model, artifact and step lines come from a dry run
    of the defaults (whose data is not here), its data lines from one on the bundled sample."""
    assert tg.dry_run(tg.Config.from_env({}), 8) == 1  # the SP8192 data is not in the repository
    default_out = capsys.readouterr().out.splitlines()
    data = {"DATA_PATH": str(SAMPLE), "TRAIN_GLOB": "sotu_train_*.bin", "VAL_GLOB": "sotu_val_*.bin",
            "TOKENIZER_PATH": str(SAMPLE / "sotu_1024_bpe.model"), "VOCAB_SIZE": "1024"}
    assert tg.dry_run(tg.Config.from_env(data), 8) == 0
    sample_out = capsys.readouterr().out.splitlines()
    block = README[README.index("DRY_RUN=1 python train_gpt.py\n```"):]
    block = block[block.index("```text\n") + 8:]
    block = block[:block.index("```")]
    quoted = [l for l in block.splitlines() if l.strip()]
    assert quoted
    for line in quoted:  # every quoted line is printed verbatim, except numbers elided as "..."
        pattern = re.escape(line).replace(re.escape("..."), ".*?")
        out = sample_out if line.startswith(("check tokenizer", "check train_shards", "check data_preflight", "dry_run_result")) else default_out
        assert any(re.fullmatch(pattern, o) for o in out), line
    fits = next(o for o in default_out if o.startswith("check artifact_fits:"))
    total = int(re.search(r"total_bytes:(\d+)", fits).group(1))
    m = re.search(r"defaults project to about ([\d.]+) MB in total", README)
    assert m and abs(total / 1e6 - float(m.group(1))) <= 0.05, (total, m and m.group(1))


def test_step_time_reference(tg):
    assert tg.RECORD_STEP_MS == {"plain": 96.0, "looped": 144.0}
    prose = " ".join(README.split())  # line breaks are the paragraph's, not the sentence's
    assert "published 96 ms per step before its loop switches on and 144 after" in prose
    assert "about 96 ms per step before its loop switch and 144 after" in prose


def readme_commands() -> list[str]:
    """The README's shell commands, continuation lines joined."""
    blocks = re.findall(r"```bash\n(.*?)```", README, re.S)
    return [c.strip() for b in blocks for c in b.replace("\\\n", " ").splitlines() if c.strip()]


def test_records_tool_commands_parse():
    import shlex
    import sys
    sys.path.insert(0, str(REPO / "records"))
    from rtool.cli import build_parser
    cmds = [c for c in readme_commands() if c.startswith("python records/records_tool.py")]
    assert len(cmds) >= 2
    for cmd in cmds:
        args = shlex.split(cmd.split("#")[0])[2:]
        build_parser().parse_args(args)  # a renamed or newly required option exits here


def test_train_gpt_commands_use_valid_settings(tg):
    shell_vars = {m.group(1): m.group(2) for c in readme_commands() for m in [re.fullmatch(r'([A-Z]+)="(.*)"', c)] if m}
    cmds = [c for c in readme_commands() if "train_gpt.py" in c and "records_tool" not in c]
    assert len(cmds) >= 5
    for cmd in cmds:
        for name, value in shell_vars.items():
            cmd = cmd.replace(f"${name}", value)
        env = {}
        for preset in re.findall(r"\$\(cat (configs/\S+\.env)\)", cmd):  # env $(cat configs/X.env) ...
            for line in (REPO / preset).read_text().splitlines():
                key, value = line.split("=", 1)
                env[key] = value
        for tok in cmd.split("train_gpt.py")[0].split():  # the assignments before the script
            if re.fullmatch(r"[A-Z_0-9]+=\S*", tok):
                key, value = tok.split("=", 1)
                env[key] = value.strip("'").replace("$SEED", "1337")
        tg.Config.from_env(env)  # unknown variables and invalid values raise


def test_readme_is_the_users_path_and_names_real_files():
    """At most 250 lines; every repository file or folder it names exists (a renamed preset,
    transcript or doc fails here, not in a newcomer's terminal)."""
    assert len(README.splitlines()) <= 250
    named = set(re.findall(r"(?<![\w/.<])((?:configs|bench|docs|data|records|tests)/[\w./-]+\w)", README))
    assert "configs/cpu_sample.env" in named and "bench/results/workflow/cpu_rehearsal.txt" in named
    missing = sorted(p for p in named if not (REPO / p).exists() and "<" not in p and "*" not in p
                     and not p.startswith(("data/datasets", "data/tokenizers", "records/track_", "configs/record_")))
    assert not missing, missing
