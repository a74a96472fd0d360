"""Chat templates from the model folder render in a sandbox with a bound on work and output: a template
that cannot render a probe conversation within the bound fails its version at load, one that blows up
on a big request fails that request only, and sane templates render exactly as transformers does."""

from __future__ import annotations

import time

import pytest

import reward_client as rc
from helpers import CHAT_1, CHAT_2, ServerProcess, add_model, config_text, random_chat, serve_repo
from originals import MISTRAL_TEMPLATE
from reward_client import RewardClient
from reward_server.errors import InvalidArgument, LoadError
from reward_server.formats.sandbox import BoundedChatTemplate, RenderBounds
from reward_server.offline.tiny_models import CHAT_TEMPLATE, train_tokenizer
from reward_server.server import StartupError

NESTED_RANGES = (
    "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}{{ bos_token }}"
)
# Fine on a short conversation, quadratic in the length of a message.
QUADRATIC = (
    "{{ bos_token }}{% for message in messages %}{% for a in message['content'] %}"
    "{% for b in message['content'] %}{% endfor %}{% endfor %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endfor %}"
)
ONE_TURN_ONLY = (
    "{% if messages|length > 2 %}{{ raise_exception('only one turn, please') }}{% endif %}" + CHAT_TEMPLATE
)
# Exercises what real templates use: namespace, slicing, loop controls, filters, tests, tojson, ~, in,
# % and str.format, {% generation %}.
RICH = (
    "{%- set ns = namespace(last_user=-1) %}"
    "{%- for message in messages[::-1] %}{%- if message.role == 'user' and ns.last_user < 0 %}"
    "{%- set ns.last_user = (messages|length - 1) - loop.index0 %}{%- endif %}{%- endfor %}"
    "{%- for message in messages %}{%- if loop.index0 > 40 %}{% break %}{% endif %}"
    "{%- if message.role == 'system' %}{{ '<|im_start|>system\n' + message.content|trim + '<|im_end|>\n' }}"
    "{%- elif message.role == 'assistant' %}{%- set content = message.content %}"
    "{%- if '</think>' in content %}{%- set content = content.split('</think>')[-1].lstrip('\n') %}"
    "{%- endif %}"
    "{% generation %}{{ '<|im_start|>assistant\n' ~ content ~ '<|im_end|>\n' }}{% endgeneration %}"
    "{%- else %}{{ '<|im_start|>user\n' + message.content + '<|im_end|>\n' }}{%- endif %}{%- endfor %}"
    "{{ messages|map(attribute='role')|join(',') }}"
    "|{{ messages|selectattr('role', 'equalto', 'user')|list|length }}"
    "|{{ ns.last_user }}|{{ {'n': messages|length}|tojson }}|{{ '%s-%03d' % ('x', 7) }}"
    "|{{ '{}:{:>4}'.format('a', 3) }}|{{ range(3)|list|sum }}{{ bos_token ~ eos_token }}"
)


# What these tests do not exercise, off: a faster load on a busy host.
FAST_LOAD = "pytorch { torchscript: false }\nmodel_warmup [ { batch_size: 1 sequence_length: 8 } ]\n"


def chats(seed: int, n: int = 8) -> list[list[dict]]:
    import random

    rng = random.Random(seed)
    out = [random_chat(rng, turns=rng.randint(1, 3)) for _ in range(n)]
    out.append(
        [
            {"role": "system", "content": "  be brief  "},
            *CHAT_1,
            {"role": "user", "content": "and?"},
            {"role": "assistant", "content": "<think>hmm</think>\n\nfine <|im_end|>"},
        ]
    )
    return out


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer()


# --- the bound -------------------------------------------------------------------------------------

ATTACKS = {
    "nested_range": NESTED_RANGES,
    "filtered_nested_range": (
        "{% set r = range(100000) %}{% for i in r %}{% for j in r if false %}{% endfor %}{% endfor %}"
    ),
    "doubling_plus": (
        "{% set ns = namespace(s='ab') %}{% for i in range(64) %}{% set ns.s = ns.s + ns.s %}{% endfor %}"
    ),
    "doubling_tilde": (
        "{% set ns = namespace(s='ab') %}{% for i in range(64) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}"
    ),
    "doubling_block": (
        "{% set ns = namespace(s='ab') %}{% for i in range(64) %}{% set t %}{{ ns.s }}{{ ns.s }}"
        "{% endset %}{% set ns.s = t %}{% endfor %}"
    ),
    "repetition": "{{ 'a' * 1000000000 }}",
    "power": "{{ 7 ** 100000000 }}",
    "center_width": "{{ 'a'|center(1000000000) }}",
    "format_width": "{{ '{:>999999999}'.format(1) }}",
    "percent_width": "{{ '%999999999s' % 'a' }}",
    "tojson_indent": "{{ messages|tojson(indent=100000000) }}",
    "join_in_loop": "{% set r = range(100000)|list %}{% for i in r %}{{ r|join|length }}{% endfor %}",
    "in_in_loop": "{% set r = range(100000)|list %}{% for i in r %}{% if -1 in r %}{% endif %}{% endfor %}",
    "slice_in_loop": "{% set r = range(100000)|list %}{% for i in r %}{% set x = r[:] %}{% endfor %}",
    "method_in_loop": "{% set s = 'a' * 60000 %}{% for i in range(100000) %}{{ s.count('b') }}{% endfor %}",
    "macro_tree": (
        "{% macro f(n) %}{% if n %}{{ f(n - 1) }}{{ f(n - 1) }}{% endif %}{% endmacro %}{{ f(40) }}"
    ),
    "macro_recursion": "{% macro f(n) %}{{ f(n) }}{% endmacro %}{{ f(1) }}",
    "recursive_loop": "{% for x in [1] recursive %}{{ loop([1, 1]) }}{% endfor %}",
    "output": "{% for i in range(100000) %}{{ 'x' * 1000 }}{% endfor %}",
    # string-growing filters and methods, refused on their estimated result before they run
    "replace_filter": "{{ messages[0]['content']|replace('', 'x' * 50000) }}",
    "replace_method": "{{ messages[0]['content'].replace('', 'x' * 50000) }}",
    "join_filter": "{{ range(100000)|join('x' * 50000) }}",
    "join_method": "{{ ('x' * 50000).join(range(100000)|map('string')|list) }}",
    "wordwrap": "{{ messages[0]['content']|wordwrap(1, wrapstring='x' * 50000) }}",
    "ljust": "{{ 'a'.ljust(1000000) }}",
    "expandtabs": "{{ ('\t' * 1000).expandtabs(1000000) }}",
    "lipsum": "{{ lipsum(1000000) }}",  # dropped from the globals
}


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_template_refused_at_load_quickly_when_it_goes_over_the_bound_on_the_probe(name):
    started = time.monotonic()
    with pytest.raises(LoadError, match="cannot render a probe conversation"):
        BoundedChatTemplate(ATTACKS[name], {"bos_token": "<s>"})
    assert time.monotonic() - started < 1.0 + 4.0  # measured 0.01-0.15 s idle; slack for a loaded host


def test_template_refused_at_load_with_a_one_line_reason_when_it_does_not_compile():
    with pytest.raises(LoadError, match="does not compile: TemplateSyntaxError") as caught:
        BoundedChatTemplate("{% for %}", {})
    assert "\n" not in str(caught.value)


def test_render_refused_when_the_time_backstop_passes():
    # A bound of zero seconds: the clock is read after a few charges, so any loop trips it.
    with pytest.raises(LoadError, match="time bound"):
        BoundedChatTemplate("{% for i in range(1000) %}{% endfor %}", {}, RenderBounds(seconds=0.0))


# Each fine on the probe, each far over the bound on a long message: loops, a multiplied allocation.
GROWING = {
    "quadratic": (QUADRATIC, "x" * 4000),  # 16M loop iterations
    "indent": ("{% for m in messages %}{{ m['content']|indent(100000) }}{% endfor %}", "\n" * 40000),
}  # 4 GB


@pytest.mark.parametrize("name", sorted(GROWING))
def test_render_refused_only_for_the_big_input_when_the_template_grows_faster_than_it(name):
    source, big = GROWING[name]
    template = BoundedChatTemplate(source, {"bos_token": "<s>"})
    small = [{"role": "user", "content": "x" * 40}]
    expected = template.render(small)
    assert "x" * 40 in expected
    started = time.monotonic()
    with pytest.raises(InvalidArgument, match="work bound"):
        template.render([{"role": "user", "content": big}])
    assert time.monotonic() - started < 5.0
    assert template.render(small) == expected


def test_render_bound_grows_with_the_input_when_the_template_is_linear(tokenizer):
    tokenizer.chat_template = CHAT_TEMPLATE
    template = BoundedChatTemplate(CHAT_TEMPLATE, tokenizer.special_tokens_map)
    huge = [{"role": "user", "content": "word " * 200_000}, {"role": "assistant", "content": "ok"}] * 3
    assert template.render(huge) == tokenizer.apply_chat_template(huge, tokenize=False)


# --- sane templates render as transformers renders them ------------------------------------------


@pytest.mark.parametrize(
    "source", [CHAT_TEMPLATE, MISTRAL_TEMPLATE, RICH], ids=["internlm2", "mistral", "rich"]
)
def test_render_equals_transformers_apply_chat_template_when_the_template_is_sane(tokenizer, source):
    tokenizer.chat_template = source
    template = BoundedChatTemplate(source, tokenizer.special_tokens_map)
    for chat in chats(7):
        assert template.render(chat) == tokenizer.apply_chat_template(chat, tokenize=False)


def test_server_ids_equal_apply_chat_template_ids_when_the_template_is_sane(tiny_checkpoint, tmp_path):
    from transformers import AutoTokenizer

    from reward_server.datatypes import Conversation, Message

    add_model(tmp_path, "m", tiny_checkpoint)
    reference = AutoTokenizer.from_pretrained(tiny_checkpoint)
    with serve_repo(tmp_path) as server:
        encoder = server.running.repository.resolve("m", "").encoder
        for chat in chats(8):
            conversation = Conversation(tuple(Message(m["role"], m["content"]) for m in chat))
            assert list(encoder.encode([conversation])[0].ids) == reference.apply_chat_template(
                chat, tokenize=True
            )


# --- through a real server ---------------------------------------------------------------------------


def _model_with_template(repo, name, checkpoint, template: str) -> None:
    add_model(repo, name, checkpoint, config_text(name, extra=FAST_LOAD))
    (repo / name / "1" / "chat_template.jinja").write_text(template, encoding="utf-8")


def test_strict_start_refused_when_a_chat_template_cannot_render_the_probe(tiny_checkpoint, tmp_path):
    add_model(tmp_path, "good", tiny_checkpoint)
    _model_with_template(tmp_path, "evil", tiny_checkpoint, NESTED_RANGES)
    with pytest.raises(StartupError, match=r"evil.*probe conversation.*work bound"):
        serve_repo(tmp_path, strict=True)


@pytest.fixture(scope="module")
def hostile_server(tiny_checkpoint, tmp_path_factory):
    """A real `reward-server serve --no-strict` (a subprocess: a template that hangs must not hang the
    test) over a sane model, a template that loops forever, a quadratic one and a picky one."""
    repo = tmp_path_factory.mktemp("hostile")
    add_model(repo, "good", tiny_checkpoint, config_text("good", extra=FAST_LOAD))
    _model_with_template(repo, "evil", tiny_checkpoint, NESTED_RANGES)
    _model_with_template(repo, "quadratic", tiny_checkpoint, QUADRATIC)
    _model_with_template(repo, "picky", tiny_checkpoint, ONE_TURN_ONLY)
    server = ServerProcess(repo, "--no-strict").wait_started(180)
    yield server
    server.kill()


def test_other_models_serve_when_a_template_is_refused_at_load(hostile_server):
    with RewardClient(hostile_server.target, model="good", timeout=60) as rm:
        assert len(rm.get_scores([CHAT_1, CHAT_2])) == 2
        evil = rm.model_metadata("evil").versions[0]
        assert evil.state == "UNAVAILABLE"
        assert "probe conversation" in evil.reason and "work bound" in evil.reason and "\n" not in evil.reason
    with (
        RewardClient(hostile_server.target, model="evil", timeout=60) as rm,
        pytest.raises(rc.UnavailableError),
    ):
        rm.get_score(CHAT_1)


def test_big_request_refused_and_the_next_scores_when_the_template_blows_up_on_it(hostile_server):
    big = [{"role": "user", "content": "x" * 4000}, {"role": "assistant", "content": "ok"}]
    with RewardClient(hostile_server.target, model="quadratic", timeout=60) as rm:
        before = rm.get_score(CHAT_1)
        started = time.monotonic()
        with pytest.raises(
            rc.InvalidArgumentError, match=r"input 1: the chat template went over its work bound"
        ):
            rm.get_scores([CHAT_1, big])
        assert time.monotonic() - started < 10
        assert rm.get_score(CHAT_1) == pytest.approx(before)
    with RewardClient(hostile_server.target, model="good", timeout=60) as rm:
        assert rm.get_score(CHAT_1)


def test_template_refusal_is_invalid_argument_when_the_template_raises(hostile_server):
    with RewardClient(hostile_server.target, model="picky", timeout=60) as rm:
        assert rm.get_score(CHAT_1)
        with pytest.raises(rc.InvalidArgumentError, match="only one turn, please"):
            rm.get_score([*CHAT_1, *CHAT_2])
        assert rm.get_score(CHAT_2)
