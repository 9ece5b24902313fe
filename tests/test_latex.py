"""LaTeX and Markdown through the Jinja2 templates (engine/render.py, templates/*.j2).

pdflatex compiles every standalone output for several models and both modes. In CI
(env CI set) a missing pdflatex is a failure; locally the compile test is skipped.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess

import pytest
import sympy

from engine.api import memory_model
from engine.latex_rows import PAGE_WIDTH, own_part, shared_part, visible_width
from engine.render import (zero_terms, environment, latex_expr, render_latex, render_markdown, shared_label, shared_parts,
                           term_label, tex_escape)
from formulas import symbols as S

PDFLATEX = shutil.which("pdflatex")


def _model(model="qwen3-0.6b", **knobs):
    return memory_model(model, None, batch_size=None, seq_len=None, **knobs)[1]


def _align(text: str) -> str:
    return re.search(r"\\begin\{align\*\}(.*?)\\end\{align\*\}", text, re.S).group(1)


def test_one_named_row_per_term_and_the_total():
    mm = _model(profile="megatron")  # pinned: its overhead sub-terms (the default transformers profile has none)
    text = render_latex(mm)
    rows = _align(text).split(r"\\")
    labels = [row.split("&", 1)[0].strip() for row in rows if row.split("&", 1)[0].strip()]
    # issue 14: terms that are 0 here (no reserve, buffers or allocator share) are left out, named once
    zero = zero_terms(mm)
    assert zero == ["overhead", "overhead/reserve", "overhead/comm_buffers", "overhead/allocator"]
    assert labels == [term_label(n) for n in mm.terms if n not in zero] + ["M"]
    assert "Terms equal to 0 here, left out: overhead, overhead/reserve" in text
    # the model's values beside the symbols: the pinned total is sympy's own LaTeX of it, digits grouped
    assert latex_expr(mm.pinned(mm.total)) in text
    assert latex_expr(mm.pinned(mm.terms["kv_cache"])) == "114{,}688 b s"


def test_training_rows_show_each_phase_and_their_max():
    mm = _model("llama-3.1-8b", mode="training", profile="megatron")
    body = _align(render_latex(mm))
    for phase, names in mm.phases.items():
        assert term_label(phase) + " &= " + " + ".join(term_label(n) for n in names[:2]) in body
    assert r"M &= \max\left(" + ", ".join(term_label(p) for p in mm.phases) + r"\right)" in body


def test_symbol_names_are_the_declared_short_ones():
    text = render_latex(_model("deepseek-v3"))
    body = _align(text)
    assert "batch" not in body and "seq_len" not in body and "hidden" not in body
    legend = {entry.latex: entry for entry in S.SYMBOLS.values()}
    rows = re.findall(r"^\$(.+?)\$ & (.+?) & (.+?) \\\\$", text, re.M)
    shown = {latex: (meaning, unit) for latex, meaning, unit in rows if latex in legend}
    assert {"b", "s", "h", "L", r"r_{kv}", r"d_{r}", r"\beta_{kv}"} <= set(shown)
    for latex, (meaning, unit) in shown.items():
        assert (meaning, unit) == (tex_escape(legend[latex].meaning), tex_escape(legend[latex].unit))


def test_values_add_the_models_numbers_and_exact_bytes():
    mm = _model()
    text = render_latex(mm, values={"batch_size": 2, "seq_len": 4096})
    ev = mm.evaluate(batch_size=2, seq_len=4096)
    assert r"$h$ & hidden size (model width) & elements & $1024$ \\" in text
    assert f"$M$ & {ev.total_bytes:,} & " in text
    assert f"${term_label('kv_cache')}$ & {ev.terms['kv_cache']:,} & " in text


def test_offloaded_state_gets_host_rows_outside_the_total():
    mm = _model("llama-3.1-8b", mode="training", offload="optimizer", profile="megatron")
    text = render_latex(mm, values={"batch_size": 1, "seq_len": 1024})
    body = _align(text)
    assert body.index("M &= ") < body.index(r"H_{\mathrm{optimizer}} &= ")
    host = mm.evaluate(batch_size=1, seq_len=1024).host
    assert host and all(f"$H_{{\\mathrm{{{tex_escape(n)}}}}}$ & {v:,} & " in text for n, v in host.items())


def test_prefill_moments_are_their_shared_part_plus_their_own_terms():
    """The default (transformers) prefill: every moment of a layer holds the layer input, the
    residual, inputs_embeds, the rotary tables and position_ids (formulas/frameworks/transformers.py
    prefill_base), written once; the logits hold none of them. Hand-worked for qwen3-0.6b (beta_a = 2,
    h = 1024, d = 128, L = 28): 2 (1 + 2) 1024 b s = 6144 b s, 2 * 2 * 128 s + 8 s = 520 s."""
    mm = _model()
    group, part = shared_parts(mm)["activations"]
    assert group == [n for n in mm.children("activations") if n != "activations/logits"]
    assert mm.pinned(part) == 6144 * S.batch_size * S.seq_len + 520 * S.seq_len
    body = _align(render_latex(mm, standalone=True))
    assert shared_label("activations") + " &= " + latex_expr(part) + " = 6144 b s + 520 s" in body
    for name in group:
        own = own_part(mm.terms[name], part)
        assert sympy.expand(mm.terms[name] - part - own) == 0 and own.free_symbols, name
        assert term_label(name) + " &= " + shared_label("activations") + " + " in body, name
    assert term_label("activations/logits") + r" &= \beta_{a} b" in body


def test_a_part_is_shared_by_most_moments_and_only_where_it_pays():
    x, y, z, w, v = sympy.symbols("x y z w v", positive=True)
    group, part = shared_part({"p": 2 * x + y + z, "q": x + y + z, "r": 3 * x + y + z + w, "logits": x + v})
    assert (group, part) == (["p", "q", "r"], x + y + z)  # the logits share only x: left out
    assert shared_part({"p": x + y - z, "q": x + y - z, "r": x + y - z})[1] == x + y  # negative: not shared
    assert shared_part({"p": x + y, "q": x + y}) == ([], 0)  # two rows: not worth a row
    assert shared_part({"p": x + y, "q": x + z, "r": x + w}) == ([], 0)  # one monomial: not worth a row


def test_the_page_wraps_at_its_width_and_the_fragment_as_before():
    mm = _model()
    page, fragment = _align(render_latex(mm, standalone=True)), _align(render_latex(mm))
    assert len(page.split(r"\\")) < len(fragment.split(r"\\"))
    labels = [term_label(n) for n in mm.terms] + [shared_label("activations")]
    widest = max(visible_width(label) for label in labels)
    for row in page.split(r"\\"):
        assert visible_width(row.split("&", 1)[1]) <= PAGE_WIDTH - widest, row
    assert visible_width(r"M_{\mathrm{kv\_cache}}") == 1 + (3 * len(r"kv\_cache") + 3) // 4


def test_long_formulas_wrap_into_balanced_rows():
    body = _align(render_latex(_model("deepseek-v3", mode="training", profile="megatron")))
    for row in body.split(r"\\"):
        assert row.count(r"\left") == row.count(r"\right"), row
        assert row.count("{") == row.count("}"), row


def test_templates_hold_no_math_and_undefined_names_fail():
    import jinja2

    env = environment()
    for name in env.list_templates(extensions=["j2"]):
        source = env.loader.get_source(env, name)[0]
        assert not re.search(r"\\(frac|beta|max|left|lceil)|\^|[0-9]\s*[*+]\s*[a-z(]", source), name
    with pytest.raises(jinja2.UndefinedError):
        env.get_template("formulas.tex.j2").render(environment="align*")


def test_text_from_a_config_path_is_escaped(tmp_path):
    config = tmp_path / "odd_name%#&$~^.json"
    config.write_text(json.dumps({"model_type": "llama", "hidden_size": 64, "num_hidden_layers": 2,
                                  "num_attention_heads": 4, "num_key_value_heads": 2, "intermediate_size": 128,
                                  "vocab_size": 1000}))
    mm = memory_model(None, str(config), batch_size=None, seq_len=None)[1]
    title = re.search(r"\\section\*\{(.*)\}", render_latex(mm, standalone=True)).group(1)
    assert r"odd\_name\%\#\&\$\textasciitilde{}\textasciicircum{}.json" in title


def test_markdown_and_notebook_forms():
    mm = _model(profile="megatron")  # pinned: its total fits one row (the transformers profile's wraps)
    markdown = render_markdown(mm, values={"batch_size": 1, "seq_len": 2048})
    assert "$$\n\\begin{aligned}" in markdown and "| $b$ | sequences processed at once" in markdown
    assert f"| $M$ | {mm.evaluate(batch_size=1, seq_len=2048).total_bytes:,} |" in markdown
    shown = mm._repr_latex_()
    assert shown.startswith("$$\\begin{aligned}") and shown.endswith("\\end{aligned}$$")
    assert latex_expr(mm.pinned(mm.total)) in shown


def test_cli_latex(run_cli):
    result = run_cli("latex", "--model", "qwen3-0.6b", "--values", "--seq-len", "4096")
    assert result.exit_code == 0, result.output
    assert "\\begin{align*}" in result.stdout and "$s$ & tokens per sequence" in result.stdout
    assert f"$M$ & {_model().evaluate(batch_size=1, seq_len=4096).total_bytes:,}" in result.stdout
    symbolic = run_cli("latex", "--symbolic", "--mode", "training", "--profile", "megatron")
    assert symbolic.exit_code == 0 and "forward\\_backward" in symbolic.stdout
    assert "\\documentclass" not in symbolic.stdout
    assert "$$" in run_cli("latex", "--symbolic", "--format", "markdown").stdout
    assert "Example" in run_cli("latex", "--help").stdout


@pytest.mark.parametrize("args", [
    ("--symbolic", "--model", "qwen3-0.6b"),
    (),
    ("--symbolic", "--values"),
    ("--model", "qwen3-0.6b", "--format", "pdf"),
    ("--model", "qwen3-0.6b", "--format", "markdown", "--standalone"),
    ("--model", "no-such-model"),
    ("--model", "qwen3-0.6b", "--values", "--seq-len", "0"),
])
def test_cli_latex_bad_input_is_one_line_exit_2(run_cli, args):
    result = run_cli("latex", *args)
    assert result.exit_code == 2
    assert result.stdout == "" and len(result.stderr.strip().splitlines()) == 1
    assert result.stderr.startswith("memsym: error: ")


# --- pdflatex ------------------------------------------------------------------------------------
COMPILED = [
    ("--model", "qwen3-0.6b"),
    ("--model", "qwen3-0.6b", "--mode", "training", "--values"),
    ("--model", "deepseek-v3", "--values"),
    ("--model", "deepseek-v3", "--mode", "training", "--recompute", "full", "--profile", "megatron"),
    ("--model", "gemma-2-9b", "--block-size", "16", "--values"),
    ("--model", "mixtral-8x7b-v0.1", "--mode", "training", "--allocator-fraction", "0.05", "--profile", "megatron"),
    ("--model", "llama-3.1-8b", "--mode", "training", "--offload", "optimizer", "--zero", "3", "--dp", "8",
     "--values", "--profile", "megatron"),
    ("--symbolic",),
    ("--symbolic", "--mode", "training"),
]


def _pdflatex():
    if PDFLATEX is None:
        if os.environ.get("CI"):
            pytest.fail("pdflatex is missing in CI: install texlive-latex-base (.ci/run does)")
        pytest.skip("pdflatex not installed here (CI installs texlive-latex-base)")
    return PDFLATEX


@pytest.mark.parametrize("args", COMPILED, ids=[" ".join(a) for a in COMPILED])
def test_pdflatex_compiles_the_standalone_document(run_cli, tmp_path, args):
    pdflatex = _pdflatex()
    result = run_cli("latex", "--standalone", *args)
    assert result.exit_code == 0, result.output
    assert "\\usepackage{amsmath}" in result.stdout and result.stdout.count("\\usepackage") == 1
    (tmp_path / "memory.tex").write_text(result.stdout)
    run = subprocess.run([pdflatex, "-interaction=nonstopmode", "-halt-on-error", "-no-shell-escape", "memory.tex"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout[-3000:]
    assert (tmp_path / "memory.pdf").stat().st_size > 1000


def test_a_zero_sub_term_is_left_out_of_its_parents_row_too(run_cli):
    """--reserve alone: M_overhead = M_overhead/reserve, not "+ M_overhead/comm_buffers" (0 here)."""
    tex = run_cli("latex", "--model", "qwen3-0.6b", "--values", "--reserve", "1GB", "--profile", "megatron").stdout
    assert r"M_{\mathrm{overhead}} &= M_{\mathrm{overhead/reserve}} = 1{,}000{,}000{,}000" in tex
    assert r"M_{\mathrm{overhead/comm\_buffers}}" not in tex and "overhead/comm\\_buffers" in tex  # named once
