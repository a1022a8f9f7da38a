"""``dlsec lint --fix``: add ``weights_only=True`` to calls that lack it, editing the source text in place.

Only calls a rule marked fixable are touched (``torch.load``/``load_state_dict_from_url`` with no
``weights_only`` at all and no ``**kwargs``/custom ``pickle_module``); ``weights_only=False`` is left for a
human. The keyword goes before the call's closing parenthesis, keeping the formatting around it: a trailing
comma in a multi-line call gets a new line with the arguments' indentation. The caller re-parses the result.
"""

from __future__ import annotations

import ast
import io
import tokenize
from collections.abc import Sequence

from dlsec.lint.engine import split_lines

KEYWORD = "weights_only=True"


def _offsets(lines: list[str]) -> list[int]:
    """Character offset of the start of each line."""
    out, pos = [], 0
    for line in lines:
        out.append(pos)
        pos += len(line)
    out.append(pos)
    return out


def _abs(lines: list[str], starts: list[int], line: int, byte_col: int) -> int:
    """Absolute character offset of an ast (1-based line, UTF-8 byte column) position."""
    text = lines[line - 1] if line - 1 < len(lines) else ""
    return starts[line - 1] + len(text.encode("utf-8")[:byte_col].decode("utf-8", "replace"))


def _insertion(
    text: str, lines: list[str], starts: list[int], call: ast.Call, newline: str
) -> tuple[int, str]:
    """Where and what to insert so that ``call`` gets ``weights_only=True`` as its last argument."""
    assert call.end_lineno is not None and call.end_col_offset is not None
    start = _abs(lines, starts, call.lineno, call.col_offset)
    end = _abs(lines, starts, call.end_lineno, call.end_col_offset)
    segment = text[start:end]
    seg_lines = split_lines(segment)
    seg_starts = _offsets(seg_lines)
    significant = [
        t
        for t in tokenize.generate_tokens(io.StringIO(segment).readline)
        if t.type
        not in (
            tokenize.NL,
            tokenize.NEWLINE,
            tokenize.COMMENT,
            tokenize.INDENT,
            tokenize.DEDENT,
            tokenize.ENDMARKER,
        )
    ]
    close, prev = significant[-1], significant[-2]
    assert close.string == ")", "a call ends with its closing parenthesis"

    def at(pos: tuple[int, int]) -> int:
        return start + seg_starts[pos[0] - 1] + pos[1]

    if prev.string == "(" and not call.args and not call.keywords:
        return at(prev.end), KEYWORD
    if prev.string == ",":
        if close.start[0] != prev.end[0]:  # multi-line with a trailing comma: a line of its own
            row = prev.end[0]
            line_text = seg_lines[row - 1]
            eol = at((row, len(line_text.rstrip("\r\n"))))
            last = max(
                [*call.args, *(k.value for k in call.keywords)], key=lambda n: (n.lineno, n.col_offset)
            )
            src_line = lines[last.lineno - 1]
            indent = src_line[: len(src_line) - len(src_line.lstrip(" \t"))]
            return eol, f"{newline}{indent}{KEYWORD},"
        return at(prev.end), f" {KEYWORD},"
    return at(prev.end), f", {KEYWORD}"


def apply_fixes(text: str, calls: Sequence[ast.Call]) -> str:
    """``text`` with ``weights_only=True`` added to each call (positions from the ast of ``text``)."""
    lines = split_lines(text)
    starts = _offsets(lines)
    newline = "\r\n" if "\r\n" in text else "\r" if "\r" in text and "\n" not in text else "\n"
    edits = sorted({_insertion(text, lines, starts, c, newline) for c in calls}, reverse=True)
    for pos, insert in edits:
        text = text[:pos] + insert + text[pos:]
    return text
