"""The documentation against the code: the README's client block runs against a real server, the
config.pbtxt table matches the proto, the CLI reference matches the parser, and links resolve."""

from __future__ import annotations

import argparse
import ast
import importlib.util
import re
from pathlib import Path
from types import ModuleType

import pytest
from google.protobuf.descriptor import Descriptor, FieldDescriptor

from helpers import serve_repo
from reward_api.v1 import model_config_pb2
from reward_client import BestOfN
from reward_server.cli import build_parser

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
# Pages other branches add; the map links them before they land.
PAGES_WRITTEN_ELSEWHERE = {ROOT / "docs" / "triton-kserve.md", ROOT / "docs" / "deploying.md"}
CARD_VERBS = {"get_score", "get_scores", "compare", "rank", "best_of_n"}


def generator() -> ModuleType:
    path = ROOT / "tools" / "generate_cli_docs.py"
    spec = importlib.util.spec_from_file_location("generate_cli_docs", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def section(text: str, heading: str) -> str:
    """The text under `heading` (a Markdown heading line) up to the next heading of any level."""
    start = text.index(heading + "\n") + len(heading) + 1
    following = re.search(r"^#{1,6} ", text[start:], re.MULTILINE)
    return text[start : start + following.start()] if following else text[start:]


def code_block(text: str, language: str) -> str:
    match = re.search(rf"```{language}\n(.*?)```", text, re.DOTALL)
    assert match, f"no ```{language} block"
    return match.group(1)


def table_rows(text: str) -> list[list[str]]:
    """Cells of each Markdown table row, header and separator lines excluded."""
    rows = []
    for line in text.splitlines():
        if line.startswith("|") and not line.startswith("| ---"):
            rows.append([cell.strip() for cell in re.split(r"(?<!\\)\|", line.strip())[1:-1]])
    return rows[1:] if rows else rows


# --- the README's client block ----------------------------------------------------------------


class _RecordCalls(ast.NodeTransformer):
    """`rm.verb(...)` as a statement becomes `_called.append(("verb", rm.verb(...)))`."""

    def visit_Expr(self, node: ast.Expr) -> ast.AST:
        call = node.value
        if (
            isinstance(call, ast.Call)
            and isinstance(call.func, ast.Attribute)
            and isinstance(call.func.value, ast.Name)
            and call.func.value.id == "rm"
        ):
            record = ast.parse(f"_called.append(({call.func.attr!r}, None))").body[0]
            record.value.args[0].elts[1] = call  # type: ignore[attr-defined]
            return ast.fix_missing_locations(ast.copy_location(record, node))
        return node


RETURN_CHECKS = {
    "float": lambda v: isinstance(v, float),
    "list[float]": lambda v: isinstance(v, list) and all(isinstance(x, float) for x in v),
    "bool": lambda v: isinstance(v, bool),
    "list[int]": lambda v: isinstance(v, list) and sorted(v) == list(range(len(v))),
    "BestOfN": lambda v: isinstance(v, BestOfN) and v.index in range(len(v.scores)),
}


def test_readme_client_block_calls_every_verb_it_shows_when_run_against_the_demo_repository():
    block = code_block(section(README.read_text(encoding="utf-8"), "## The client in five lines"), "python")
    assert "localhost:50051" in block
    claimed = dict(re.findall(r"rm\.(\w+)\(.*# -> ([\w\[\]]+)", block))
    assert CARD_VERBS <= claimed.keys(), claimed
    with serve_repo(ROOT / "model_repository") as server:
        code = block.replace("localhost:50051", server.target)
        tree = ast.fix_missing_locations(_RecordCalls().visit(ast.parse(code)))
        called: list[tuple[str, object]] = []
        exec(compile(tree, "README.md", "exec"), {"_called": called})
        metrics = server.running.metrics.registry
        rpcs = {
            method: metrics.get_sample_value(
                "reward_request_success_total", {"model": "demo", "version": "1", "method": method}
            )
            for method in ("Score", "Rank")
        }
    assert [verb for verb, _ in called] == list(claimed)  # each shown verb ran, in order, once
    for verb, value in called:
        assert RETURN_CHECKS[claimed[verb]](value), (verb, value)
    # get_score, get_scores and compare are Score RPCs; rank and best_of_n are Rank RPCs.
    assert rpcs == {"Score": 3.0, "Rank": 2.0}


# --- config.pbtxt reference --------------------------------------------------------------------


def proto_fields(message: Descriptor, prefix: str = "") -> set[str]:
    """Dotted paths of every field a config.pbtxt can set; a message field with fields of its own is
    documented by its fields, an empty one (`version_policy.all`) by itself."""
    paths = set()
    for field in message.fields:
        path = prefix + field.name
        if field.type == FieldDescriptor.TYPE_MESSAGE and field.message_type.fields:
            paths |= proto_fields(field.message_type, path + ".")
        else:
            paths.add(path)
    return paths


def test_config_reference_has_one_row_per_proto_field_when_compared_with_model_config_proto():
    page = (ROOT / "docs" / "model-repository.md").read_text(encoding="utf-8")
    rows = table_rows(section(page, "### Every field"))
    documented = [row[0].strip("`") for row in rows]
    assert all(len(row) == 3 and row[1] and row[2] for row in rows), "each row: field, default, meaning"
    assert len(documented) == len(set(documented)), "a field documented twice"
    expected = proto_fields(model_config_pb2.ModelConfig.DESCRIPTOR)
    assert set(documented) - expected == set(), "rows for fields the proto does not have"
    assert expected - set(documented) == set(), "proto fields without a row"


# --- CLI reference -----------------------------------------------------------------------------


def cli_page() -> str:
    return (ROOT / "docs" / "operations.md").read_text(encoding="utf-8")


def test_cli_reference_equals_the_generated_text_when_regenerated_from_the_parser():
    gen = generator()
    assert gen.current_section(cli_page()) == gen.cli_reference(build_parser()), (
        "docs/operations.md is stale: run python tools/generate_cli_docs.py"
    )


def test_cli_reference_lists_every_option_with_its_default_when_walking_the_parser():
    gen = generator()
    reference = gen.current_section(cli_page())
    parser = build_parser()
    commands = gen.subcommands(parser)
    assert {"serve", "import", "export"} <= commands.keys()
    documented_options = set(re.findall(r"`(--[a-z0-9-]+)`", reference))
    in_parser: set[str] = set()
    for name, command in [("", parser), *commands.items()]:
        heading = f"### `{parser.prog} {name}`" if name else f"### `{parser.prog}` (global options"
        rows = table_rows(reference[reference.index(heading) :].split("\n### ")[0])
        by_name = {row[0]: row for row in rows}
        for action in gen.documented_actions(command):
            assert isinstance(action, argparse.Action)
            key = gen.option_names(action)
            assert key in by_name, f"{name or 'global'}: {key} has no row"
            default = action.default
            if action.option_strings and not action.required and default not in (None, [], False, True):
                assert str(default) in by_name[key][2], (key, default, by_name[key])
            in_parser.update(action.option_strings)
    assert documented_options - in_parser == set(), "options documented that the parser does not have"


# --- links -------------------------------------------------------------------------------------


def markdown_files() -> list[Path]:
    return [
        README,
        ROOT / "bench" / "RESULTS.md",
        ROOT / "bench" / "results" / "HISTORY.md",
        *sorted((ROOT / "docs").glob("*.md")),
    ]


def anchors(path: Path) -> set[str]:
    """GitHub's anchors for the headings of a Markdown file."""
    found = set()
    for heading in re.findall(r"^#{1,6} (.+)$", path.read_text(encoding="utf-8"), re.MULTILINE):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        found.add(slug)
    return found


@pytest.mark.parametrize("page", markdown_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve_when_followed_from_each_page(page):
    text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.DOTALL)
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+:", target):
            continue  # https:, mailto:
        file_part, _, anchor = target.partition("#")
        linked = (page.parent / file_part).resolve() if file_part else page
        if linked in PAGES_WRITTEN_ELSEWHERE:
            continue
        if not linked.exists():
            broken.append(f"{target}: no such file")
        elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
            broken.append(f"{target}: no such heading")
    assert not broken, broken


# --- docs/architecture.md's source layout ---------------------------------------------------------

PACKAGE = ROOT / "server" / "reward_server"


def documented_layout() -> dict[str, set[str]]:
    """The source map's entries under server/reward_server/: folder (relative, '' for the package) ->
    the names listed in it (`cli.py`, `fronts/`), read from their indentation (two spaces a level)."""
    block = section((ROOT / "docs" / "architecture.md").read_text(), "## Source layout").split("```")[1]
    lines = block.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("server/reward_server/"))
    listed: dict[str, set[str]] = {"": set()}
    folders = [""]
    for line in lines[start + 1 :]:
        indent = len(line) - len(line.lstrip(" "))
        if indent == 0:
            break  # the next top-level entry (tools/, deploy/)
        if indent >= 28:
            continue  # a description's continuation line
        depth = indent // 2
        folders = folders[:depth]
        names = [name.strip() for name in line.strip().split("  ")[0].split(",")]
        listed.setdefault(folders[-1], set()).update(names)
        if names[0].endswith("/"):
            folders.append(folders[-1] + names[0])
            listed.setdefault(folders[-1], set())
    return listed


def test_source_layout_names_every_module_when_compared_with_the_package_tree():
    listed = documented_layout()
    for folder, names in listed.items():
        for name in names:
            assert (PACKAGE / folder / name).exists(), f"docs/architecture.md lists {folder}{name}: not found"
        if names:  # a folder whose contents the map lists lists all of them
            present = {
                p.name + ("/" if p.is_dir() else "")
                for p in (PACKAGE / folder).iterdir()
                if (p.suffix == ".py" and p.name != "__init__.py") or (p / "__init__.py").exists()
            }
            assert present == names, f"{folder or 'reward_server/'}: missing {present - names}"


def test_every_source_folder_is_a_regular_package_when_walking_the_tree():
    # setuptools' find (pyproject.toml) skips a folder without __init__.py: a wheel and the image would
    # lack it while an editable install, which imports it as a namespace package, works.
    folders = {p.parent for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts}
    assert not [f for f in folders if not (f / "__init__.py").exists()]
