"""The command line of train.py, evaluate.py and infer.py, checked before Hydra sees it.

Hydra's own messages for a mistyped key, a value its grammar cannot read or a configuration it cannot
compose span several lines (with a link and HYDRA_FULL_ERROR=1) and exit 1; the house rule is one line
naming the thing and the fix, exit 2. :func:`prepare` refuses the original 01-ai scripts' flags,
overrides Hydra's grammar cannot read (showing the quoted form that it can), a sweep without ``-m``,
unknown group options and unknown keys (suggesting the nearest valid ones), and any other composition
error; it rewrites train.py's synonyms (``output_dir=``, ``device=``, ``dtype=``). Sweeps
(``-m a=1,2``), ``+key=``, ``++key=``, ``~key``, group choices and Hydra's own ``hydra.*`` keys pass
through when Hydra can apply them.
"""

from __future__ import annotations

import difflib
import os
import re
import shlex
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from yivl.config.vocabulary import OLD_KEYS, REMOVED_KEYS
from yivl.errors import YivlError

_SWEEP_FUNCTION = re.compile(r"^\w+\(")  # choice(...), range(...), glob(...): leave to Hydra
_HYDRA_VALUE_OPTIONS = {"-cn", "--config-name", "-cp", "--config-path", "-cd", "--config-dir", "-c", "--cfg"}
_HYDRA_VALUE_OPTIONS |= {"-p", "--package", "--experimental-rerun"}
_HANDS_OFF = {"-h", "--help", "--hydra-help", "-i", "--info", "-sc", "--shell-completion"}
_MULTIRUN = {"-m", "--multirun"}

Synonym = Callable[[str, bool], list[str]]  # (value, multirun) -> the overrides it stands for


@dataclass(frozen=True)
class EntryPoint:
    """What :func:`prepare` needs to know about one Hydra entry point."""

    script: str  # e.g. "infer.py"
    config_dir: Path
    config_name: str  # e.g. "infer"
    flags: Mapping[str, str] = field(default_factory=dict)  # the original scripts' flags -> key
    synonyms: Mapping[str, Synonym] = field(default_factory=dict)


def prepare(argv: Sequence[str], entry: EntryPoint) -> list[str]:
    """``argv`` checked (YivlError with one line on the first problem) and with synonyms rewritten."""
    argv = list(argv)
    if _HANDS_OFF & set(argv):
        return argv
    legacy_flag(argv, entry.flags, entry.script)
    multirun = bool(_MULTIRUN & set(argv))
    message = unreadable(overrides(argv), entry.script, multirun)
    if message:
        raise YivlError(message)
    argv = [new for arg in argv for new in _rewrite(arg, entry.synonyms, multirun)]
    options = config_options(argv)
    if "-cp" not in options and "-cd" not in options:  # else groups may come from those folders
        message = unknown_option(argv, entry.config_dir)
        if message:
            raise YivlError(message)
    message = other_config(options, entry)
    if message:
        raise YivlError(message)
    if not options:
        # One composition with every override: when it works every key exists, so the (second)
        # composition that tells an unknown key is only paid for on the way to an error.
        message = composition_error(overrides(argv), entry)
        if message:
            raise YivlError(unknown_key(overrides(argv), entry) or message)
    return argv


_QUOTING = '(docs/cli.md, "Quoting")'
_OPTION_NAMES = {"-cn": "-cn", "--config-name": "-cn", "-cp": "-cp", "--config-path": "-cp"}
_OPTION_NAMES |= {"-cd": "-cd", "--config-dir": "-cd"}


def config_options(argv: Sequence[str]) -> dict[str, str]:
    """Hydra's config options in ``argv``: ``-cn`` / ``-cp`` / ``-cd`` -> value (``-cn x``, ``-cn=x`` and
    ``--config-name=x`` alike; the last one given wins, as in Hydra's argument parser)."""
    found: dict[str, str] = {}
    for i, arg in enumerate(argv):
        name, eq, value = arg.partition("=")
        if eq and name in _OPTION_NAMES:
            found[_OPTION_NAMES[name]] = value
        elif arg in _OPTION_NAMES and i + 1 < len(argv):
            found[_OPTION_NAMES[arg]] = argv[i + 1]
    return found


def other_config(options: Mapping[str, str], entry: EntryPoint) -> str | None:
    """One line for ``-cp`` / ``-cd`` naming no folder or ``-cn`` naming no config in them (Hydra says
    it in several lines, exit 1). A relative ``-cp`` is read from the script's folder (the one that holds
    ``configs/``), a relative ``-cd`` from the current one, as Hydra reads them (no ``~`` expansion)."""
    primary = entry.config_dir
    extra: list[Path] = []
    for option in ("-cp", "-cd"):
        value = options.get(option)
        if value is None or "://" in value:  # pkg:// and file:// search paths: Hydra's to check
            continue
        path = Path(value)
        if option == "-cp" and not path.is_absolute():
            path = entry.config_dir.parent / path
        path = Path(os.path.abspath(path))
        if not path.is_dir():
            what = "the folder of the primary config" if option == "-cp" else "a folder of more configs"
            return f"{option} {value}: there is no folder {path} ({option} names {what})"
        if option == "-cp":
            primary = path
        else:
            extra.append(path)
    given = options.get("-cn")
    if "://" in options.get("-cp", "") or (given is None and primary == entry.config_dir):
        return None
    name = (given or entry.config_name).removesuffix(".yaml")
    folders = [primary, *extra]
    if any((folder / f"{name}.yaml").is_file() for folder in folders):
        return None
    sub = Path(name).parent  # -cn experiment/stage9: list experiment/
    found = {(sub / p.stem).as_posix() for folder in folders for p in (folder / sub).glob("*.yaml")}
    there = ", ".join(sorted(found)) or "none"
    where = ", ".join(str(folder / sub) for folder in folders)
    if given is not None:
        return f"-cn {given}: no {name}.yaml in {where}; the configs there: {there}"
    return (
        f"-cp: no {name}.yaml in {where} ({entry.script} reads {name} unless -cn names another); "
        f"the configs there: {there}"
    )


def unreadable(args: Sequence[str], script: str, multirun: bool) -> str | None:
    """The first override Hydra's grammar cannot read (or a sweep without ``-m``), as one line with
    the form to write instead."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    parser = OverridesParser.create()
    for arg in args:
        try:
            parsed = parser.parse_overrides([arg])[0]
        except HydraException:
            return _unreadable_message(arg, script, parser)
        if parsed.is_sweep_override() and not multirun:
            if _secret(arg.partition("=")[0]):
                return f"{arg.partition('=')[0]}=<hidden> reads as a sweep: quote the value {_QUOTING}"
            value = arg.partition("=")[2]
            quoted = _quoted(arg.partition("=")[0], value, parser)
            fix = f"quote the value, e.g. {quoted}" if quoted else f"quote the value {_QUOTING}"
            return (
                f"{arg} reads as a sweep over several values: {fix} (a list is key=[a,b]; a sweep needs -m)"
            )
    return None


def _unreadable_message(arg: str, script: str, parser: Any) -> str:
    key, sep, value = arg.partition("=")
    if not sep:
        return (
            f"cannot read the argument {arg}: an override is key=value "
            f"(python {script} --cfg job lists the keys)"
        )
    if not _parses(parser, f"{key}=x"):
        return (
            f"cannot read the key in {arg}: a key is letters, digits, '_', '-', '.' and '/' "
            f"(python {script} --cfg job lists the keys)"
        )
    if _secret(key):  # an error line goes to logs and terminals: never echo a key
        example = _shell(f'{key}="..."')
        return f"cannot read the override {key}=<hidden>: quote the value, e.g. {example} {_QUOTING}"
    quoted = _quoted(key, value, parser)
    fix = f"quote the value, e.g. {quoted} {_QUOTING}" if quoted else f"quote the value {_QUOTING}"
    if value.lstrip().startswith(("[", "{")):
        fix = f"close the brackets of the list, or {fix}"
    return f"cannot read the override {arg}: {fix}"


_SECRET_WORDS = ("key", "token", "password", "secret")


def _secret(key: str) -> bool:
    """Whether the value of ``key`` (``api.api_key``) is a credential, not to be repeated in errors."""
    name = key.lstrip("+~").rsplit(".", 1)[-1].lower()
    return any(word in name for word in _SECRET_WORDS)


def _parses(parser: Any, arg: str) -> bool:
    from hydra.errors import HydraException

    try:
        parser.parse_overrides([arg])
    except HydraException:
        return False
    return True


def _quoted(key: str, value: str, parser: Any) -> str | None:
    """``key=value`` with the value quoted the way Hydra reads it back as ``value``, itself quoted for
    a POSIX shell; None when no simple form reads back exactly."""
    quotes = ("'", '"') if '"' in value and "'" not in value else ('"', "'")  # 'say "hi"' reads best
    for quote in quotes:
        # Inside quotes Hydra reads a backslash as an escape only before a quote or at the end.
        body = re.sub(r"(\\*)(?=" + quote + r"|$)", lambda m: m.group(1) * 2, value)
        form = f"{key}={quote}{body.replace(quote, chr(92) + quote)}{quote}"
        if _reads_back(parser, form, value):
            return _shell(form)
    return None


def _reads_back(parser: Any, form: str, value: str) -> bool:
    from hydra.errors import HydraException

    try:
        parsed = parser.parse_overrides([form])[0]
    except HydraException:
        return False
    return parsed.value() == value


def _shell(arg: str) -> str:
    """``arg`` quoted for a POSIX shell: in single quotes, or in double quotes when it holds one."""
    if "'" not in arg:
        return shlex.quote(arg)
    return '"' + re.sub(r'(["\\$`])', r"\\\1", arg) + '"'


def legacy_flag(argv: Sequence[str], flags: Mapping[str, str], script: str) -> None:
    """YivlError with a hint when ``argv`` uses a flag of the original 01-ai scripts (``flags`` maps
    e.g. ``--model-path`` to ``model.path``)."""
    for i, arg in enumerate(argv):
        flag, _, inline_value = arg.partition("=")
        if flag not in flags:
            continue
        value = inline_value or (argv[i + 1] if i + 1 < len(argv) else "VALUE")
        raise YivlError(
            f"{script} takes Hydra overrides, not flags: write {flags[flag]}={value} "
            f"instead of {flag} {value}"
        )


def _rewrite(arg: str, synonyms: Mapping[str, Synonym], multirun: bool) -> list[str]:
    key, sep, value = arg.partition("=")
    if not sep or key not in synonyms:
        return [arg]
    return synonyms[key](value, multirun)


def overrides(argv: Sequence[str]) -> list[str]:
    """The overrides in ``argv``: Hydra's own options (and their values) left out."""
    found, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg in _HYDRA_VALUE_OPTIONS:
            skip = True
        elif not arg.startswith("-"):
            found.append(arg)
    return found


def group_options(config_dir: Path, group: str) -> list[str] | None:
    """The options of config group ``group`` (a folder of YAML files), or None if it is not a group."""
    folder = config_dir / group
    if not folder.is_dir():
        return None
    return sorted(p.stem for p in folder.glob("*.yaml"))


def unknown_option(argv: Sequence[str], config_dir: Path) -> str | None:
    """The first ``group=option`` argument naming an option that does not exist, as a message."""
    for arg in argv:
        key, sep, value = arg.partition("=")
        key = key.lstrip("+~")
        if not sep or value in ("null", "") or _SWEEP_FUNCTION.match(value) or "." in key:
            continue
        options = group_options(config_dir, key)
        if options is None:
            continue
        for choice in value.split(","):
            if choice not in options:
                return f"unknown {key}={choice}; valid options: {', '.join(options)}"
    return None


def unknown_key(args: Sequence[str], entry: EntryPoint) -> str | None:
    """``unknown key 'k'; did you mean a or b?`` for the first value override whose key the composed
    config lacks; None when every key exists (or the config cannot be composed here: Hydra reports)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    groups, values = [], []
    for arg in args:
        try:
            parsed = parser.parse_override(arg)
        except Exception:  # a malformed override or config is for Hydra to report, in its words
            return None
        key = parsed.key_or_group
        if parsed.is_add() or parsed.is_force_add() or parsed.is_delete() or parsed.package is not None:
            continue
        if key == "hydra" or key.startswith(("hydra.", "hydra/")):
            continue
        if "/" in key or group_options(entry.config_dir, key) is not None:
            if parsed.value_type is not None and parsed.value_type.name == "SIMPLE_CHOICE_SWEEP":
                arg = f"{key}={next(iter(parsed.sweep_string_iterator()))}"
            elif parsed.is_sweep_override():
                return None  # range()/glob() over a group: the keys depend on the choice
            groups.append(arg)
        else:
            values.append(key)
    if not values:
        return None
    tree = _composed(entry, groups)
    if tree is None:
        return None
    for key in values:
        if _has_key(tree, key.split(".")) is False:
            removed = REMOVED_KEYS.get(entry.config_name, {}).get(key)
            if removed is not None:
                return f"{key} was removed: {removed}"
            return _unknown_message(key, tree, OLD_KEYS.get(entry.config_name, {}), entry.script)
    return None


def _composed(entry: EntryPoint, groups: list[str]) -> dict | None:
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    try:
        with initialize_config_dir(str(entry.config_dir), version_base="1.3"):
            cfg = compose(entry.config_name, overrides=groups)
    except Exception:  # a malformed override or config is for Hydra to report, in its words
        return None
    return OmegaConf.to_container(cfg, resolve=False)


def composition_error(args: Sequence[str], entry: EntryPoint) -> str | None:
    """One line for the first problem Hydra meets composing ``entry``'s config with ``args`` (under
    ``-m`` each sweep stands as its first value); None when it composes or cannot be tried here."""
    from hydra import compose, initialize_config_dir
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    single = []
    for arg in args:
        parsed = parser.parse_overrides([arg])[0]
        if parsed.is_sweep_override():
            try:
                first = f"{arg.partition('=')[0]}={next(iter(parsed.sweep_string_iterator()))}"
            except Exception:  # interval() or glob(): no first value without the config; Hydra decides
                return None
            if not _parses(parser, first):
                return None
            arg = first
        single.append(arg)
    try:
        with initialize_config_dir(str(entry.config_dir), version_base="1.3"):
            compose(entry.config_name, overrides=single)
    except Exception as exc:  # whatever Hydra or OmegaConf raise is told in one line
        return _composition_message(exc, args, entry, parser)
    return None


def _composition_message(exc: Exception, args: Sequence[str], entry: EntryPoint, parser: Any) -> str:
    text = str(exc).strip() or type(exc).__name__
    quoted = re.search(r"'([^']+)'", text)
    named = quoted.group(1) if quoted else None
    for arg in args:
        parsed = parser.parse_overrides([arg])[0]
        if parsed.key_or_group != named:
            continue
        key = parsed.key_or_group
        if parsed.is_add() and text.startswith("Could not append"):
            return (
                f"{arg} adds {key}, which already exists: write {arg[1:]} to set it "
                f"(or +{arg} to set or add it)"
            )
        if parsed.is_delete() and text.startswith("Could not delete '"):
            return (
                f"cannot delete {key}: {entry.script}'s defaults list has no {key} group "
                f"(python {entry.script} --cfg job shows the configuration)"
            )
        if parsed.is_delete() and "does not exist" in text:
            return (
                f"cannot delete {key}: it is not set in {entry.script}'s configuration "
                f"(write {key}=null to clear a value; python {entry.script} --cfg job lists the keys)"
            )
    first = text.splitlines()[0].rstrip(".")
    return f"{first} (python {entry.script} --cfg job shows the configuration)"


def _has_key(node: Any, parts: list[str]) -> bool | None:
    """Whether the key exists; None when it cannot be told without resolving (Hydra decides)."""
    for part in parts:
        if isinstance(node, dict):
            if part not in node:
                return False
            node = node[part]
        elif isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                return None
            node = node[int(part)]
        else:
            return None if node is None or (isinstance(node, str) and "${" in node) else False
    return True


def key_paths(node: Any, prefix: str = "") -> list[str]:
    """Every dotted key of a plain config tree, in file order (list items are not descended into)."""
    paths = []
    for key, value in node.items():
        path = f"{prefix}{key}"
        paths.append(path)
        if isinstance(value, dict):
            paths += key_paths(value, f"{path}.")
    return paths


def nearest_keys(key: str, paths: list[str], old: Mapping[str, str]) -> list[str]:
    """Up to three valid keys near ``key``: the same last name elsewhere, then close spellings of the
    whole key and of its last name; an old spelling stands for its new key."""
    leaf = key.rpartition(".")[2]
    leaves = {path: path.rpartition(".")[2] for path in paths}
    found = [p for p in paths if leaves[p] == leaf]
    found += difflib.get_close_matches(key, paths, n=3, cutoff=0.75)
    close_leaves = difflib.get_close_matches(leaf, sorted(set(leaves.values())), n=3, cutoff=0.8)
    found += [p for name in close_leaves for p in paths if leaves[p] == name]
    unique: list[str] = []
    for path in found:
        path = old.get(path, path)
        if path not in unique and path != key and not path.startswith("hydra"):
            unique.append(path)
    return unique[:3]


def _unknown_message(key: str, tree: dict, old: Mapping[str, str], script: str) -> str:
    near = nearest_keys(key, key_paths(tree), old)
    if not near:
        return f"unknown key '{key}'; python {script} --cfg job lists the valid keys"
    return f"unknown key '{key}'; did you mean {' or '.join(near)}?"
