"""The README and docs/ against the repository: every relative link and image points to a file
that exists (and a #anchor to a heading there), docs/options.md lists exactly the options of
each script's --help, and the README's two set-up commands are the ones .ci/run runs and a
demo that trains. No network."""
import json
import re
import shlex
import subprocess
import sys

import pytest

from tests.conftest import ROOT

SCRIPTS = ('train.py', 'selfsupervised.py', 'supervised.py')
DOCUMENTS = [ROOT / 'README.md', *sorted((ROOT / 'docs').glob('*.md'))]
FENCE = re.compile(r'^\s*(```|~~~)')
LINK = re.compile(r'!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+"[^"]*")?\s*\)')   # [text](target "title")
HTML_LINK = re.compile(r'<(?:img|a)\b[^>]*?\b(?:src|href)="([^"]+)"', re.I)
INLINE_CODE = re.compile(r'(`+)(.+?)\1')


# ---- markdown, as GitHub reads it -------------------------------------------------------

def prose_lines(text):
    """The lines of a markdown text outside fenced code blocks."""
    inside = False
    for line in text.splitlines():
        if FENCE.match(line):
            inside = not inside
            continue
        if not inside:
            yield line


def anchor(heading):
    """GitHub's anchor of a heading: markdown marks and punctuation dropped, lowercase,
    each space a hyphen (`## Front end (`x.py`)` -> front-end-xpy)."""
    text = re.sub(r'!?\[([^\]]*)\]\([^)]*\)', r'\1', heading)     # a link: its text
    text = re.sub(r'<[^>]+>', '', text).strip().lower()
    text = re.sub(r'[^\w\- ]', '', text)                          # keeps letters, digits, _ and -
    return text.replace(' ', '-')


def anchors(text):
    """Every anchor of a document's headings; a repeated one gets -1, -2, ... as on GitHub."""
    found, seen = set(), {}
    for line in prose_lines(text):
        match = re.match(r'^#{1,6}\s+(.*?)\s*#*\s*$', line)
        if match:
            slug = anchor(match.group(1))
            found.add(slug if slug not in seen else f'{slug}-{seen[slug]}')
            seen[slug] = seen.get(slug, 0) + 1
    return found


def links(text):
    """(line number, target) of every markdown or HTML link and image outside code."""
    inside = False
    for number, line in enumerate(text.splitlines(), 1):
        if FENCE.match(line):
            inside = not inside
            continue
        if inside:
            continue
        line = INLINE_CODE.sub('code', line)
        found = [*LINK.finditer(line), *HTML_LINK.finditer(line)]
        for match in sorted(found, key=lambda match: match.start()):
            yield number, match.group(1)


def broken_links(path, root=ROOT):
    """'file:line: target (why)' for each relative link of the markdown file `path` that
    points to no file inside `root`, or to a heading its target does not have."""
    problems = []
    text = path.read_text()
    for number, target in links(text):
        if re.match(r'^[a-z][a-z0-9+.-]*:', target, re.I):          # http:, https:, mailto:
            continue
        file_part, _, fragment = target.partition('#')
        linked = (path.parent / file_part).resolve() if file_part else path
        where = f'{path.relative_to(root)}:{number}: {target}'
        if root.resolve() not in linked.parents and linked != root.resolve():
            problems.append(f'{where} (outside the repository)')
        elif not linked.exists():
            problems.append(f'{where} (no such file)')
        elif fragment and linked.suffix == '.md' and fragment not in anchors(linked.read_text()):
            problems.append(f'{where} (no heading with that anchor)')
    return problems


# ---- links -------------------------------------------------------------------------------

@pytest.mark.parametrize('path', DOCUMENTS, ids=lambda p: p.name)
def test_every_relative_link_and_image_exists(path):
    assert broken_links(path) == []


def test_the_link_check_finds_what_is_broken(tmp_path):
    (tmp_path / 'docs').mkdir()
    (tmp_path / 'img').mkdir()
    (tmp_path / 'img' / 'a.png').write_bytes(b'png')
    (tmp_path / 'docs' / 'other.md').write_text('# Other\n\n## Front end (`x.py`)\n')
    page = tmp_path / 'docs' / 'page.md'
    page.write_text(
        '# Page\n\n## The paper\'s claims, at 3 seeds\n\n'
        '[ok](other.md#front-end-xpy) [ok](#the-papers-claims-at-3-seeds) ![ok](../img/a.png)\n'
        '<img src="../img/a.png"> [web](https://example.org/x#y) `[code](missing.md)`\n'
        '```\n[in a code block](missing.md)\n```\n'
        '[gone](missing.md) ![gone](../img/b.png) [bad anchor](other.md#front-end)\n'
        '[bad anchor here](#the-papers-claims) <img src="../img/c.png"> [out](../../x.md)\n')
    found = broken_links(page, root=tmp_path)
    assert [problem.split(': ', 1)[1] for problem in found] == [
        'missing.md (no such file)', '../img/b.png (no such file)',
        'other.md#front-end (no heading with that anchor)',
        '#the-papers-claims (no heading with that anchor)', '../img/c.png (no such file)',
        '../../x.md (outside the repository)']
    assert all(problem.startswith('docs/page.md:') for problem in found)


def test_anchors_follow_github():
    assert anchor('Front end (`spectograms.py`)') == 'front-end-spectogramspy'
    assert anchor("The paper's claims at three seeds") == 'the-papers-claims-at-three-seeds'
    assert anchor('A pool, against --label_fraction') == 'a-pool-against---label_fraction'
    assert anchor('Weights & Biases') == 'weights--biases'
    assert anchors('# A\n## A\n```\n# not a heading\n```\n## B ##\n') == {'a', 'a-1', 'b'}


def test_each_document_says_what_it_answers_and_the_readme_lists_it():
    readme = (ROOT / 'README.md').read_text()
    for path in DOCUMENTS[1:]:
        lines = path.read_text().splitlines()
        assert lines[0].startswith('# ') and lines[1] == '', path.name
        assert len(lines[2]) > 40 and not lines[2].startswith(('#', '-', '|', '`')), path.name
        assert f'](docs/{path.name})' in readme, f'README does not list docs/{path.name}'


def test_the_readme_is_a_front_door():
    assert len((ROOT / 'README.md').read_text().splitlines()) <= 250


# ---- options -----------------------------------------------------------------------------

def help_groups(script):
    """{option: group heading} from `python <script> --help` (its groups: the script's own
    block, then the shared options), and {option: default as printed}."""
    result = subprocess.run([sys.executable, script, '--help'], cwd=ROOT, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    groups, defaults, group = {}, {}, None
    for line in result.stdout.splitlines():
        option = re.match(r'^  --(\w+)=(.*?)(?:  # .*)?$', line)
        if option:
            groups[option.group(1)], defaults[option.group(1)] = group, option.group(2)
        elif line.endswith(':') and not line.startswith(' '):
            group = line
    assert groups, result.stdout
    return groups, defaults


@pytest.fixture(scope='module')
def script_help():
    return {script: help_groups(script) for script in SCRIPTS}


def documented_options():
    """docs/options.md's options: a table row whose first cell is `--name`, under a '## '
    section; {name: (section, the row's cells)}. A name listed twice is an error."""
    rows, section = {}, None
    for line in prose_lines((ROOT / 'docs' / 'options.md').read_text()):
        if line.startswith('## '):
            section = line[3:]
        row = re.match(r'^\|\s*`--(\w+)`\s*\|', line)
        if row:
            assert row.group(1) not in rows, f'--{row.group(1)} is listed twice'
            cells = [cell.strip() for cell in re.split(r'(?<!\\)\|', line.strip().strip('|'))]
            rows[row.group(1)] = (section, cells)
    return rows


def plain(value):
    return value.strip().strip('`').strip('"')


def test_options_md_lists_every_option_of_help_and_no_other(script_help):
    documented = documented_options()
    in_help = set().union(*(groups for groups, _ in script_help.values()))
    assert sorted(in_help - set(documented)) == [], 'options in --help missing from docs/options.md'
    assert sorted(set(documented) - in_help) == [], 'options in docs/options.md unknown to --help'


def test_options_md_groups_them_as_help_does(script_help):
    documented = documented_options()
    for script, (groups, defaults) in script_help.items():
        for name, group in groups.items():
            section, cells = documented[name]
            if group.startswith('set at the top of'):
                assert section == 'Set at the top of each script', (script, name, section)
            else:
                assert group.startswith('shared') and section.startswith('Shared'), (name, section)
                assert plain(cells[1]) == plain(defaults[name]), (
                    f'--{name}: docs/options.md says {cells[1]}, --help {defaults[name]}')


# ---- the README's two set-up commands ----------------------------------------------------

def setup_commands():
    """The README's set-up section's two bash blocks, each as a list of commands joined by &&
    (each command a list of words)."""
    text = (ROOT / 'README.md').read_text()
    start = text.index('\n## Set up')
    section = text[start:text.index('\n## ', start + 1)]
    blocks = re.findall(r'```bash\n(.*?)```', section, re.S)
    assert len(blocks) == 2, 'the set-up section should hold two bash blocks: demo, tests'
    return [[shlex.split(part) for part in block.strip().split('&&')] for block in blocks]


def ci_commands():
    """What .ci/run runs after moving to the repository root, one list of words each."""
    commands = []
    for line in (ROOT / '.ci' / 'run').read_text().splitlines():
        line = line.strip()
        if not line or line.startswith('#') or line.startswith(('set ', 'cd ')):
            continue
        commands.append(shlex.split(line))
    return commands


def without_pip_quiet(command):
    """pip's -q only quietens its output: .ci/run passes it, the README does not."""
    if command[0].endswith('/pip'):
        return [word for word in command if word not in ('-q', '--quiet')]
    return command


def test_the_readme_test_command_is_what_ci_runs():
    _, tests = setup_commands()
    assert [without_pip_quiet(c) for c in tests] == [without_pip_quiet(c) for c in ci_commands()]
    assert tests[-1][-3:] == ['pytest', '-q', 'tests']


def test_the_readme_demo_trains(tmp_path):
    """The demo command as the README writes it, run for one step on the real synth demo
    (generated into a fresh cache, a few seconds): it must parse, build and train."""
    demo, tests = setup_commands()
    assert demo[:-1] == tests[:-1], 'the demo and the tests should install the same way'
    python, script, *options = demo[-1]
    assert python == '.venv/bin/python' and script == 'train.py', demo[-1]
    result = subprocess.run(
        [sys.executable, script, *options, '--stop_after_steps=1', f'--out_dir={tmp_path}/runs',
         f'--cache_dir={tmp_path}/cache', '--run_name=demo'],
        cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    run = tmp_path / 'runs' / 'demo'
    written = json.loads((run / 'config.json').read_text())
    for option in options:                        # the run has the options the README gives
        name, value = option.removeprefix('--').split('=', 1)
        expected = type(written[name])(value) if type(written[name]) in (int, float) else value
        assert written[name] == expected, (name, written[name], value)
    assert (run / 'checkpoint_last.pt').exists()
